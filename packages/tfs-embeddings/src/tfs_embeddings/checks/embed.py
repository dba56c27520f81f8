"""The checks of a token embedding: :func:`check_embed`."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from tfs_core.checking import (
    Catalogue,
    Check,
    CheckFailed,
    Contract,
    Report,
    Subject,
    check_dtypes,
    check_gradients,
    check_resized,
    check_same,
    expect_shape,
    max_difference,
    output,
    run_checks,
)
from tfs_embeddings.checks._common import (
    D_MODEL,
    D_VOCAB,
    POS,
    TOLERANCE,
    _bigram_learned,
    _loaded,
    _nearest_rows,
    _reference,
    _tokens,
    _weights,
)
from tfs_embeddings.checks.embed_mistakes import MISTAKES
from tfs_embeddings.checks.embed_mistakes import Embed as Plain
from tfs_embeddings.checks.tasks import train_deterministic_bigram
from tfs_embeddings.embed import Embed

__all__ = ["check_embed"]

EMBED = Contract(
    signature="Embed(d_vocab, d_model)",
    kwargs=lambda: {"d_vocab": D_VOCAB, "d_model": D_MODEL},
    params={"W_E": (D_VOCAB, D_MODEL)},
)


def _embed_shapes(subject: Subject) -> None:
    tokens = _tokens(D_VOCAB)
    expect_shape(
        output(subject.build()(tokens)), (2, POS, D_MODEL), "output for tokens [batch, pos]"
    )
    check_dtypes(subject, lambda module, dtype: output(module(tokens)))
    small = subject.build(d_vocab=7, d_model=5)
    expect_shape(output(small(tokens % 7)), (2, POS, 5), "output with d_vocab=7, d_model=5")
    check_resized(subject, small, "W_E", (7, 5), "d_vocab=7, d_model=5")


def _embed_same_as_tfs(subject: Subject) -> None:
    """On random ids, and on ids below ``d_vocab / 2`` (where a one-hot sized by the
    largest id present, not by ``d_vocab``, shows)."""
    for high in (D_VOCAB, D_VOCAB // 2):
        tokens = _tokens(high)
        got = output(_loaded(subject, EMBED)(tokens))
        check_same(
            got, _reference(Embed, EMBED)(tokens), TOLERANCE, f"for ids below {high} the output"
        )


def _lookup(subject: Subject) -> None:
    """Every output vector is the row ``W_E[token]``; first on a square table, where a
    lookup along the wrong axis (the column ``W_E[:, token]``) still has the right shape."""
    for d_vocab in (D_MODEL, D_VOCAB):
        gen = torch.Generator().manual_seed(4)
        table = torch.randn(d_vocab, D_MODEL, generator=gen)
        tokens = torch.randperm(d_vocab, generator=gen).reshape(2, -1)  # every id once
        module = subject.load(subject.build(d_vocab=d_vocab), {"W_E": table})
        with torch.no_grad():
            out = output(module(tokens))
        expect_shape(out, (*tokens.shape, D_MODEL), f"output with d_vocab={d_vocab}")
        row, distance = _nearest_rows(out, table)
        wrong = ((row != tokens) | (distance > TOLERANCE)).nonzero()
        if not len(wrong):
            continue
        b, p = wrong[0].tolist()
        token = int(tokens[b, p])
        where = f"token {token} (batch {b}, position {p})"
        if d_vocab == D_MODEL and max_difference(out[b, p], table[:, token], "column") <= TOLERANCE:
            raise CheckFailed(
                f"{where} got column {token} of W_E, not row {token} — W_E is "
                f"[d_vocab, d_model]: look the token up along the first axis, W_E[token]"
            )
        if distance[b, p] <= TOLERANCE:
            raise CheckFailed(
                f"{where} got row {int(row[b, p])} of W_E instead of row {token} — each "
                f"output vector is the row W_E[token], picked by the token id itself"
            )
        raise CheckFailed(
            f"the vector for {where} is no row of W_E (the nearest, row {int(row[b, p])}, "
            f"is off by {float(distance[b, p]):.3g}) — each output vector is the row "
            f"W_E[token], copied unchanged"
        )


def _embed_gradients(subject: Subject) -> None:
    # 4 x 6 ids out of 20: repeated ids, whose gradient rows sum several positions.
    reference = functools.partial(Embed, **EMBED.kwargs())
    check_gradients(subject, _weights(EMBED), reference, _tokens(D_VOCAB, batch=4), TOLERANCE)


def _embed_learning(subject: Subject) -> None:
    accuracy, smallest = train_deterministic_bigram(0, make_embed=subject.build)
    _bigram_learned(accuracy, smallest, "with tfs's Unembed, this embedding does not train")


EMBED_CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _embed_shapes),
    ("same as tfs", _embed_same_as_tfs),
    ("lookup", _lookup),
    ("gradients", _embed_gradients),
]

EMBED_LEARNING: list[tuple[str, Check]] = [("learning: bigrams", _embed_learning)]
EMBED_CATALOGUE = Catalogue(
    correct=Plain,
    mistakes=MISTAKES,
    probes=lambda: [(_weights(EMBED, seed), (_tokens(D_VOCAB, seed + 1),)) for seed in (0, 2)],
)


def check_embed(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's token-embedding checks on ``cls``, built as ``cls(d_vocab=20, d_model=12)``.

    The checks: the parameter ``W_E [d_vocab, d_model]``; shapes and dtypes; the output
    equal to tfs's ``Embed`` under the same weights (within 1e-5, float32); the lookup
    (each output vector is the row ``W_E[token]``, also with a square table); gradients
    equal to tfs's; and, unless ``learning=False``, the learning check: with tfs's Unembed
    it learns a bigram map (well under a second). A class that computes one of the known
    mistakes of :mod:`~tfs_embeddings.checks.embed_mistakes` is told which, first.
    """
    checks = EMBED_CHECKS + (EMBED_LEARNING if learning else [])
    return run_checks("embed", cls, EMBED, checks, catalogue=EMBED_CATALOGUE)
