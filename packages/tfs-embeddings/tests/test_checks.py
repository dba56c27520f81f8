"""tfs_embeddings.checks: tfs's own Embed, Unembed and LearnedPositionalEmbedding pass every
check, and each bug learners make, planted in components written independently here, fails
a check whose message names the concept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed
from tfs_embeddings.checks import Report, check_embed, check_pos_embed, check_unembed


class PlainEmbed(nn.Module):
    """A token embedding as a learner writes it (one-hot times the table), with switches
    that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model) * 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        d_vocab, d_model = self.W_E.shape
        if self.bugs.get("modulo"):
            tokens = tokens % d_model
        # Without num_classes the one-hot is as wide as the largest id present plus one.
        classes = -1 if self.bugs.get("one_hot_by_ids") else d_vocab
        one_hot = F.one_hot(tokens, classes).to(self.W_E.dtype)
        # The linear-layer habit of weights stored [out, in] reads columns instead of rows.
        return one_hot @ (self.W_E.T if self.bugs.get("transposed") else self.W_E)


class PlainUnembed(nn.Module):
    """An unembedding as a learner writes it, with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_model: int, d_vocab: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) * 0.02)
        self.b_U = nn.Parameter(torch.zeros(d_vocab))

    def forward(self, residual: Tensor) -> Tensor:
        logits = torch.einsum("bpm,mv->bpv", residual, self.W_U)
        if not self.bugs.get("no_b_U"):
            logits = logits + self.b_U
        return logits.softmax(dim=-1) if self.bugs.get("softmax") else logits


class PlainPosEmbed(nn.Module):
    """A learned positional embedding as a learner writes it, with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) * 0.02)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        if self.bugs.get("by_token"):
            return self.W_pos[tokens]
        batch, pos = tokens.shape
        first = 0 if self.bugs.get("ignore_offset") else offset
        rows = self.W_pos[torch.arange(first, first + pos)]
        return rows if self.bugs.get("no_batch") else rows.repeat(batch, 1, 1)


CHECK: dict[type[nn.Module], Callable[..., Report]] = {
    PlainEmbed: check_embed,
    PlainUnembed: check_unembed,
    PlainPosEmbed: check_pos_embed,
}


def _planted(base: type[nn.Module], **bugs: Any) -> type[nn.Module]:
    return type(base.__name__, (base,), {"bugs": bugs})


PLANTED = [
    # (bug, component, switches, the check that must fail, words its message must contain,
    # the mistake named first, if one of the catalogue's)
    (
        "embed: one-hot without num_classes",
        PlainEmbed,
        {"one_hot_by_ids": True},
        "same as tfs",
        "cannot be multiplied",
        None,
    ),
    (
        "pos-embed: no batch axis",
        PlainPosEmbed,
        {"no_batch": True},
        "independent of tokens",
        "expected shape [2, 6, 12], got [6, 12]",
        None,
    ),
    (
        "embed: columns of W_E",
        PlainEmbed,
        {"transposed": True},
        "lookup",
        "along the first axis",
        None,
    ),
    (
        "embed: ids modulo d_model",
        PlainEmbed,
        {"modulo": True},
        "lookup",
        "by the token id itself",
        "wrapped modulo d_model",
    ),
    (
        "unembed: no b_U",
        PlainUnembed,
        {"no_b_U": True},
        "every weight and bias used",
        "the bias b_U is never used",
        "b_U is never added",
    ),
    (
        "unembed: softmax",
        PlainUnembed,
        {"softmax": True},
        "logits",
        "like probabilities",
        "through a softmax",
    ),
    (
        "pos-embed: ignores the offset",
        PlainPosEmbed,
        {"ignore_offset": True},
        "offset",
        "the positions ignore the offset",
        None,
    ),
    (
        "pos-embed: rows by token id",
        PlainPosEmbed,
        {"by_token": True},
        "independent of tokens",
        "never on which token it is",
        "picked by the token ids",
    ),
]

TFS = [
    (check_embed, Embed, 6),
    (check_unembed, Unembed, 7),
    (check_pos_embed, LearnedPositionalEmbedding, 8),
]


@pytest.mark.parametrize(("check", "cls", "count"), TFS, ids=["embed", "unembed", "pos-embed"])
def test_tfs_component_passes_every_check(
    check: Callable[..., Report], cls: type[nn.Module], count: int
) -> None:
    report = check(cls)
    assert report.ok, str(report)
    assert len(report.results) == count


@pytest.mark.parametrize("cls", list(CHECK), ids=[c.__name__ for c in CHECK])
def test_the_plain_component_passes_every_check(cls: type[nn.Module]) -> None:
    """The independent components the bugs are planted in are themselves correct."""
    report = CHECK[cls](cls, learning=False)
    assert report.ok, str(report)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize(
    ("bug", "base", "switches", "check", "words", "named"), PLANTED, ids=[p[0] for p in PLANTED]
)
def test_planted_bug_fails_the_check_that_names_it(
    bug: str,
    base: type[nn.Module],
    switches: dict[str, Any],
    check: str,
    words: str,
    named: str | None,
    expect_failure: Callable[..., None],
    expect_named: Callable[..., None],
) -> None:
    report = CHECK[base](_planted(base, **switches), learning=False)
    expect_failure(report, check, words)
    expect_named(report, named)
