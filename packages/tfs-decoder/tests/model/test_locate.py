"""tfs_decoder.checks.locate: a learner's decoder or block with one planted bug, written
independently here (every part its own plain tensor ops, under tfs's parameter names), is
located at the sub-module or the wiring that holds the bug; tfs's own model and the
bug-free learner's locate nothing; and the checks' "same as tfs" message carries the
sentence."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_core.checking import random_weights
from tfs_decoder import Decoder, DecoderConfig, ResidualBlock
from tfs_decoder.checks import Report, check_block, check_decoder
from tfs_decoder.checks import block as block_checks
from tfs_decoder.checks import decoder as decoder_checks
from tfs_decoder.checks.locate import first_difference
from tfs_mlp import MLP

# tfs's own forwards are shape-checked by their own tests; here they run beside learner
# code that is not, and the checks would only slow the runs down.
pytestmark = pytest.mark.usefixtures("without_runtime_type_checks")

CONFIG = decoder_checks.CONFIG
TOLERANCE = decoder_checks.TOLERANCE
Bugs = frozenset[str]


def _weight(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * 0.02)


class Embedding(nn.Module):
    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = _weight(d_vocab, d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.W_E[tokens]


class Positions(nn.Module):
    """Returns ``[pos, d_model]``, added by broadcasting: located all the same."""

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = _weight(n_ctx, d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.W_pos[: tokens.shape[1]]


class Norm(nn.Module):
    def __init__(self, d_model: int, bugs: Bugs) -> None:
        super().__init__()
        self.unbiased = "unbiased variance" in bugs
        self.w, self.b = nn.Parameter(torch.ones(d_model)), nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        variance = x.var(dim=-1, keepdim=True, unbiased=self.unbiased)
        return (x - x.mean(dim=-1, keepdim=True)) / (variance + 1e-5).sqrt() * self.w + self.b


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head: int, bugs: Bugs) -> None:
        super().__init__()
        self.scale = d_head if "attention scale" in bugs else math.sqrt(d_head)
        self.W_Q, self.W_K, self.W_V = (_weight(n_heads, d_model, d_head) for _ in range(3))
        self.b_Q, self.b_K, self.b_V = (_weight(n_heads, d_head) for _ in range(3))
        self.W_O, self.b_O = _weight(n_heads, d_head, d_model), _weight(d_model)

    def forward(self, x: Tensor) -> Tensor:
        q = torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q
        k = torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K
        v = torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / self.scale
        later = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        pattern = scores.masked_fill(later, -math.inf).softmax(dim=-1)
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        return torch.einsum("bqhd,hdm->bqm", z, self.W_O) + self.b_O


class Perceptron(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, bugs: Bugs) -> None:
        super().__init__()
        self.relu = "relu" in bugs
        self.W_in, self.b_in = _weight(d_model, d_mlp), _weight(d_mlp)
        self.W_out, self.b_out = _weight(d_mlp, d_model), _weight(d_model)

    def forward(self, x: Tensor) -> Tensor:
        pre = x @ self.W_in + self.b_in
        post = F.relu(pre) if self.relu else F.gelu(pre, approximate="tanh")
        return post @ self.W_out + self.b_out


class Unembedding(nn.Module):
    def __init__(self, d_model: int, d_vocab: int, bugs: Bugs) -> None:
        super().__init__()
        self.softmax = "softmax" in bugs
        self.W_U, self.b_U = _weight(d_model, d_vocab), _weight(d_vocab)

    def forward(self, x: Tensor) -> Tensor:
        logits = x @ self.W_U + self.b_U
        return logits.softmax(dim=-1) if self.softmax else logits


class Block(nn.Module):
    bugs: ClassVar[Bugs] = frozenset()

    def __init__(self, d_model: int, attn: nn.Module, mlp: nn.Module, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln1, self.attn = Norm(d_model, self.bugs), attn
        self.ln2, self.mlp = Norm(d_model, self.bugs), mlp

    def forward(self, x: Tensor) -> Tensor:
        attn_out = self.attn(self.ln1(x))
        mid = attn_out if "no attention residual" in self.bugs else x + attn_out
        mlp_out: Tensor = self.mlp(self.ln2(mid))
        return mlp_out if "no mlp residual" in self.bugs else mid + mlp_out


class Transformer(nn.Module):
    bugs: ClassVar[Bugs] = frozenset()

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c, bugs = config, self.bugs
        self.embed, self.pos_embed = Embedding(c.d_vocab, c.d_model), Positions(c.n_ctx, c.d_model)
        self.blocks = nn.ModuleList(
            _planted(Block, *bugs)(
                c.d_model,
                Attention(c.d_model, c.n_heads, c.d_head, bugs),
                Perceptron(c.d_model, c.d_mlp, bugs),
            )
            for _ in range(c.n_layers)
        )
        self.ln_final = Norm(c.d_model, bugs)
        self.unembed = Unembedding(c.d_model, c.d_vocab, bugs)

    def forward(self, tokens: Tensor) -> Tensor:
        positions = self.pos_embed(tokens)
        x = self.embed(tokens) + positions
        if "positions added twice" in self.bugs:
            x = x + positions
        if "pos_embed called twice" in self.bugs:
            x = x + self.pos_embed(tokens)
        blocks = self.blocks[::-1] if "blocks reversed" in self.bugs else self.blocks
        for block in blocks:
            x = block(x)
        if "skips ln_final" not in self.bugs:
            x = self.ln_final(x)
        logits: Tensor = (
            x @ self.unembed.W_U + self.unembed.b_U
            if "unembeds by hand" in self.bugs
            else self.unembed(x)
        )
        return logits


def _planted(cls: type[nn.Module], *bugs: str) -> Callable[..., nn.Module]:
    planted: type[nn.Module] = type(cls.__name__, (cls,), {"bugs": frozenset(bugs)})
    return planted


def _decoders(*bugs: str) -> tuple[nn.Module, Decoder]:
    """The learner's decoder with ``bugs`` and tfs's, holding the same weights."""
    weights = random_weights(decoder_checks.CONTRACT.params, seed=0)
    learner, tfs = _planted(Transformer, *bugs)(config=CONFIG), Decoder(CONFIG)
    learner.load_state_dict(weights)
    tfs.load_state_dict(weights)
    return learner, tfs


def _tokens() -> Tensor:
    return torch.randint(0, CONFIG.d_vocab, (2, 8), generator=torch.Generator().manual_seed(1))


LOCATED = [
    (
        ("attention scale",),
        "blocks.0.attn differs (the embeddings and blocks.0.ln1 match): run `tfs check "
        "attention` on your Attention",
    ),
    (
        ("unbiased variance",),
        "blocks.0.ln1 differs (the embeddings match): run `tfs check layernorm` on your Norm",
    ),
    (
        ("relu",),
        "blocks.0.mlp differs (the embeddings, blocks.0.ln1, blocks.0.attn and blocks.0.ln2 "
        "match): run `tfs check mlp` on your Perceptron",
    ),
    (
        ("no mlp residual",),
        "blocks.0 differs though its ln1, attn, ln2 and mlp match tfs's, so the difference is "
        "in how it combines them: resid_post = resid_mid + mlp(ln2(resid_mid)) (run `tfs "
        "check block` on your Block)",
    ),
    (
        ("no attention residual",),
        "the input of blocks.0.ln2 differs from tfs's though the embeddings, blocks.0.ln1 and "
        "blocks.0.attn match, so the difference is in how they are combined: "
        "resid_mid = resid_pre + attn(ln1(resid_pre))",
    ),
    (
        ("softmax",),
        "unembed differs (the embeddings, blocks.0, blocks.1 and ln_final match): run `tfs "
        "check unembed` on your Unembedding",
    ),
    (
        ("skips ln_final",),
        "ln_final was never called: logits = unembed(ln_final(x_n)), x_n the last block's output",
    ),
    (
        # Nothing is called after the last block: the model's output shows what is missing.
        ("skips ln_final", "unembeds by hand"),
        "ln_final was never called: logits = unembed(ln_final(x_n)), x_n the last block's output",
    ),
    (
        ("positions added twice",),
        "the input of blocks.0.ln1 differs from tfs's though the embeddings match, so the "
        "difference is in how they are combined: the residual stream x_0 = embed(tokens) + "
        "pos_embed(tokens)",
    ),
    (("pos_embed called twice",), "pos_embed ran twice in one forward; tfs's runs it once"),
    (("blocks reversed",), "blocks.1 ran before blocks.0, but tfs's runs blocks.0 first"),
]


@pytest.mark.parametrize(("bugs", "sentence"), LOCATED, ids=[" + ".join(b) for b, _ in LOCATED])
def test_a_planted_bug_is_located(bugs: tuple[str, ...], sentence: str) -> None:
    learner, tfs = _decoders(*bugs)
    assert first_difference(learner, tfs, _tokens(), TOLERANCE) == sentence


def test_every_sub_module_matching_blames_how_they_are_combined() -> None:
    """A block alone, missing the MLP's residual: its four parts all match tfs's."""
    weights = random_weights(block_checks.CONTRACT.params, seed=0)
    learner = _planted(Block, "no mlp residual")(**_block_parts())
    tfs = ResidualBlock(**_block_parts())
    learner.load_state_dict(weights)
    tfs.load_state_dict(weights)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    assert first_difference(learner, tfs, x, block_checks.TOLERANCE) == (
        "every sub-module's output matches tfs's (ln1, attn, ln2 and mlp), so the difference "
        "is in how they are combined: resid_post = resid_mid + mlp(ln2(resid_mid))"
    )


def _block_parts() -> dict[str, Any]:
    return {"d_model": 16, "attn": MultiHeadAttention(16, 2), "mlp": MLP(16, 32)}


@pytest.mark.parametrize("learner", ["tfs", "plain"])
def test_a_model_equal_to_tfs_locates_nothing(learner: str) -> None:
    plain, tfs = _decoders()
    got = plain if learner == "plain" else Decoder(CONFIG)
    got.load_state_dict(tfs.state_dict())
    assert first_difference(got, tfs, _tokens(), TOLERANCE) is None


class Raises(Transformer):
    def forward(self, tokens: Tensor) -> Tensor:
        raise RuntimeError("the learner's bug")


def test_a_learner_forward_that_raises_locates_nothing() -> None:
    _, tfs = _decoders()
    assert first_difference(Raises(CONFIG), tfs, _tokens(), TOLERANCE) is None


def test_missing_sub_modules_are_named() -> None:
    _, tfs = _decoders()
    flat = nn.Sequential(nn.Embedding(CONFIG.d_vocab, CONFIG.d_vocab))
    sentence = first_difference(flat, tfs, _tokens(), TOLERANCE)
    assert sentence is not None
    assert sentence.startswith("could not compare sub-modules: your model has no embed, pos_embed")


SAID_BY_THE_CHECK = [
    (
        lambda: check_decoder(_planted(Transformer, "relu"), learning=False),
        "blocks.0.mlp differs (the embeddings, blocks.0.ln1, blocks.0.attn and blocks.0.ln2 "
        "match): run `tfs check mlp` on your Perceptron",
    ),
    (
        lambda: check_block(_planted(Block, "unbiased variance"), learning=False),
        "ln1 differs (its input matches tfs's): run `tfs check layernorm` on your Norm",
    ),
]


@pytest.mark.parametrize(("run", "sentence"), SAID_BY_THE_CHECK, ids=["decoder", "block"])
def test_the_same_as_tfs_check_says_where(run: Callable[[], Report], sentence: str) -> None:
    message = run().failures["same as tfs"]
    assert message.startswith("under the same weights ")
    assert message.endswith(f" — {sentence}")
