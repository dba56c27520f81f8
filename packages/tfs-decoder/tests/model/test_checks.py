"""tfs_decoder.checks: tfs's LayerNorm, ResidualBlock, Decoder and next-token loss pass every
check, and each bug learners make, planted in versions written independently here, fails
a check whose message names the concept.

The plain decoder uses tfs's MultiHeadAttention and MLP inside its blocks (the checks of
those components live in their own packages); everything else here is plain tensor ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import Decoder, DecoderConfig, LayerNorm, ResidualBlock, next_token_loss
from tfs_decoder.checks import (
    Report,
    check_block,
    check_decoder,
    check_layernorm,
    check_loss,
)
from tfs_mlp import MLP


class PlainLayerNorm(nn.Module):
    """LayerNorm as a learner writes it, with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = 1e-5 if self.bugs.get("fixed_eps") else eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        bug = self.bugs.get
        if bug("gain_first"):
            x = x * self.w
        dims = bug("dims", (-1,))
        mean = x.mean(dim=dims, keepdim=True)
        centred = x if bug("no_mean") else x - mean
        variance = x.var(dim=dims, keepdim=True, unbiased=bug("unbiased", False))
        if bug("detached_variance"):
            variance = variance.detach()
        if bug("eps_outside"):
            return centred / (variance.sqrt() + self.eps) * self.w + self.b
        normalised = centred / (variance + self.eps).sqrt()
        return (normalised if bug("gain_first") else normalised * self.w) + self.b


class PlainBlock(nn.Module):
    """A pre-LayerNorm residual block as a learner writes it, with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_model: int, attn: nn.Module, mlp: nn.Module, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln1, self.attn = PlainLayerNorm(d_model, eps), attn
        self.ln2, self.mlp = PlainLayerNorm(d_model, eps), mlp

    def forward(self, x: Tensor) -> Tensor:
        bug = self.bugs.get
        if bug("post_ln"):
            mid = self.ln1(x + self.attn(x))
            out: Tensor = self.ln2(mid + self.mlp(mid))
            return out
        attn_out = self.attn(self.ln1(x))
        mid = attn_out if bug("no_attn_residual") else x + attn_out
        mlp_out: Tensor = self.mlp(self.ln2(mid))
        return mlp_out if bug("no_mlp_residual") else mid + mlp_out


class PlainDecoder(nn.Module):
    """A decoder as a learner writes it, with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c = config

        def weight(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) * 0.02)

        self.embed = nn.ParameterDict({"W_E": weight(c.d_vocab, c.d_model)})
        self.pos_embed = nn.ParameterDict({"W_pos": weight(c.n_ctx, c.d_model)})
        causal = not self.bugs.get("not_causal")
        self.blocks = nn.ModuleList(
            PlainBlock(
                c.d_model,
                MultiHeadAttention(c.d_model, c.n_heads, c.d_head, causal=causal),
                MLP(c.d_model, c.d_mlp, c.activation),
            )
            for _ in range(c.n_layers)
        )
        self.ln_final = PlainLayerNorm(c.d_model)
        self.unembed = nn.ParameterDict(
            {"W_U": weight(c.d_model, c.d_vocab), "b_U": nn.Parameter(torch.zeros(c.d_vocab))}
        )

    def forward(self, tokens: Tensor) -> Tensor:
        pos = torch.arange(tokens.shape[1])
        wrong = {"first row": torch.zeros_like(tokens), "by token": tokens, "reversed": pos.flip(0)}
        positions = wrong.get(self.bugs.get("positions", ""), pos)
        x = self.embed["W_E"][tokens] + self.pos_embed["W_pos"][positions]
        for block in self.blocks:
            x = block(x)
        out: Tensor = self.ln_final(x) @ self.unembed["W_U"] + self.unembed["b_U"]
        return out


def plain_loss(**bugs: Any) -> Callable[[Tensor, Tensor], Tensor]:
    """The next-token loss as a learner writes it, with switches that plant bugs."""

    def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
        shift = 0 if bugs.get("unshifted") else 1
        predictions, targets = logits[:, : logits.shape[1] - shift], tokens[:, shift:]
        log_probs = predictions.log_softmax(dim=bugs.get("softmax_dim", -1))
        picked = log_probs.gather(-1, targets[..., None])[..., 0]
        return -picked.sum() if bugs.get("sum") else -picked.mean()

    return next_token_loss


def _planted(cls: type[nn.Module], **bugs: Any) -> type[nn.Module]:
    return type(cls.__name__, (cls,), {"bugs": bugs})


# Each entry: (bug, how to check the buggy version, the check that must fail, its words).
PLANTED: list[tuple[str, Callable[[], Report], str, str]] = [
    (
        "unbiased variance",
        lambda: check_layernorm(_planted(PlainLayerNorm, unbiased=True), learning=False),
        "variance",
        "use the mean of squared deviations (biased), not the unbiased estimate",
    ),
    (
        "eps outside the square root",
        lambda: check_layernorm(_planted(PlainLayerNorm, eps_outside=True), learning=False),
        "eps",
        "eps belongs inside the square root",
    ),
    (
        "eps argument ignored",
        lambda: check_layernorm(_planted(PlainLayerNorm, fixed_eps=True), learning=False),
        "eps",
        "as if eps were 1e-05 — use the eps argument, not a fixed value",
    ),
    (
        "LayerNorm over positions and d_model",
        lambda: check_layernorm(_planted(PlainLayerNorm, dims=(-2, -1)), learning=False),
        "axis",
        "normalise each position over d_model alone",
    ),
    (
        "mean not subtracted",
        lambda: check_layernorm(_planted(PlainLayerNorm, no_mean=True), learning=False),
        "mean",
        "subtract the mean over d_model",
    ),
    (
        "variance detached from the graph",
        lambda: check_layernorm(_planted(PlainLayerNorm, detached_variance=True), learning=False),
        "gradients",
        "the gradient of the input differs from tfs's",
    ),
    (
        "missing residual around the attention",
        lambda: check_block(_planted(PlainBlock, no_attn_residual=True), learning=False),
        "residual",
        "add the attention's output to the residual stream",
    ),
    (
        "missing residual around the MLP",
        lambda: check_block(_planted(PlainBlock, no_mlp_residual=True), learning=False),
        "residual",
        "add the MLP's output to the residual stream",
    ),
    (
        "post-LayerNorm block",
        lambda: check_block(_planted(PlainBlock, post_ln=True), learning=False),
        "pre-LayerNorm",
        "the attention read x itself, not ln1(x)",
    ),
    (
        "unshifted loss",
        lambda: check_loss(plain_loss(unshifted=True)),
        "shift",
        "compare logits[:, :-1] with tokens[:, 1:]",
    ),
    (
        "loss over positions instead of the vocabulary",
        lambda: check_loss(plain_loss(softmax_dim=1)),
        "vocabulary axis",
        "take log_softmax over the vocabulary axis",
    ),
    (
        "summed loss",
        lambda: check_loss(plain_loss(sum=True)),
        "mean",
        "the sum over all predictions",
    ),
    (
        "decoder without the causal mask",
        lambda: check_decoder(_planted(PlainDecoder, not_causal=True), learning=False),
        "causal",
        "future positions leak into the past",
    ),
    (
        "decoder adds W_pos[0] at every position",
        lambda: check_decoder(_planted(PlainDecoder, positions="first row"), learning=False),
        "positions",
        "add the positional embedding of position p",
    ),
    (
        "decoder picks W_pos rows by token id",
        lambda: check_decoder(_planted(PlainDecoder, positions="by token"), learning=False),
        "positions",
        "add the positional embedding of position p",
    ),
    (
        "decoder adds W_pos in reverse order",
        lambda: check_decoder(_planted(PlainDecoder, positions="reversed"), learning=False),
        "positions",
        "position p adds row p of W_pos",
    ),
]


@pytest.mark.parametrize(
    ("check", "target", "learning", "count"),
    [
        (check_layernorm, LayerNorm, True, 9),
        (check_block, ResidualBlock, True, 7),
        # The decoder's learning check is train_reversal(Decoder, seed=0), which
        # test_learning_reversal.py runs with tighter thresholds: not trained twice here.
        (check_decoder, Decoder, False, 6),
        (check_loss, next_token_loss, True, 6),
    ],
    ids=["layernorm", "block", "decoder", "loss"],
)
def test_tfs_passes_every_check_and_the_global_generator_is_left_alone(
    check: Callable[..., Report], target: Any, learning: bool, count: int
) -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    report = check(target, learning=learning)
    assert report.ok, str(report)
    assert len(report.results) == count
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("check", "target"),
    [
        (check_layernorm, PlainLayerNorm),
        (check_block, PlainBlock),
        (check_decoder, PlainDecoder),
        (check_loss, plain_loss()),
    ],
    ids=["layernorm", "block", "decoder", "loss"],
)
def test_the_plain_versions_pass_every_check(check: Callable[..., Report], target: Any) -> None:
    """The independent versions the bugs are planted in are themselves correct."""
    report = check(target, learning=False)
    assert report.ok, str(report)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize(("bug", "run", "check", "words"), PLANTED, ids=[p[0] for p in PLANTED])
def test_planted_bug_fails_the_check_that_names_it(
    bug: str, run: Callable[[], Report], check: str, words: str, expect_failure: Callable[..., None]
) -> None:
    report = run()
    expect_failure(report, check, words)


def test_a_loss_from_torch_cross_entropy_passes() -> None:
    """A reference from outside tfs: torch's own cross-entropy, shifted by hand."""

    def torch_loss(logits: Tensor, tokens: Tensor) -> Tensor:
        d_vocab = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, d_vocab), tokens[:, 1:].reshape(-1))

    report = check_loss(torch_loss)
    assert report.ok, str(report)


def test_a_gain_applied_before_normalising_is_named_and_not_blamed_on_the_mean() -> None:
    """With random gains the 'mean' probe failed this class, whose mean is subtracted; it
    reads the shift under w = 1 now, and the catalogue names the real mistake."""
    report = check_layernorm(_planted(PlainLayerNorm, gain_first=True), learning=False)
    assert report.mistake is not None, str(report)
    assert "multiplied by w before it is normalised" in report.mistake.says
    assert "mean" not in report.failures, str(report)
