"""The checks of a learned positional embedding: :func:`check_pos_embed`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

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
    N_CTX,
    POS,
    TOLERANCE,
    _loaded,
    _nearest_rows,
    _reference,
    _tokens,
    _weights,
)
from tfs_embeddings.checks.pos_embed_mistakes import MISTAKES, PosEmbed
from tfs_embeddings.checks.tasks import train_position_labels
from tfs_embeddings.positional import LearnedPositionalEmbedding

__all__ = ["check_pos_embed"]

POS_EMBED = Contract(
    signature="LearnedPositionalEmbedding(n_ctx, d_model)",
    kwargs=lambda: {"n_ctx": N_CTX, "d_model": D_MODEL},
    params={"W_pos": (N_CTX, D_MODEL)},
)


def _pos_shapes(subject: Subject) -> None:
    tokens = _tokens(N_CTX)
    expect_shape(
        output(subject.build()(tokens)), (2, POS, D_MODEL), "output for tokens [batch, pos]"
    )
    check_dtypes(subject, lambda module, dtype: output(module(tokens)))
    full = torch.zeros(2, N_CTX, dtype=torch.long)
    expect_shape(
        output(subject.build()(full)), (2, N_CTX, D_MODEL), f"output for n_ctx={N_CTX} positions"
    )
    small = subject.build(n_ctx=7, d_model=5)
    expect_shape(output(small(tokens)), (2, POS, 5), "output with n_ctx=7, d_model=5")
    check_resized(subject, small, "W_pos", (7, 5), "n_ctx=7, d_model=5")


def _pos_same_as_tfs(subject: Subject) -> None:
    tokens, offset = _tokens(N_CTX), N_CTX - POS
    module, reference = (
        _loaded(subject, POS_EMBED),
        _reference(LearnedPositionalEmbedding, POS_EMBED),
    )
    check_same(output(module(tokens)), reference(tokens), TOLERANCE)
    got = output(module(tokens, offset=offset))
    what = f"the output with offset={offset}"
    check_same(got, reference(tokens, offset=offset), TOLERANCE, what)


def _independent_of_tokens(subject: Subject) -> None:
    module = _loaded(subject, POS_EMBED)
    with torch.no_grad():
        first = output(module(_tokens(N_CTX, seed=1)))
        second = output(module(_tokens(N_CTX, seed=2)))
    expect_shape(first, (2, POS, D_MODEL), "output for tokens [batch, pos]")
    max_difference(second, first, "output")
    moved = (second - first).detach().abs().amax(dim=(0, 2)).nan_to_num(math.inf)
    if not float(moved.max()) <= TOLERANCE:
        at = int(moved.argmax())
        raise CheckFailed(
            f"the output at position {at} moved by {float(moved[at]):.3g} when only the token "
            f"ids changed — a positional embedding depends on where a token is, never on which "
            f"token it is: look rows up by position, not by token id"
        )


def _rows_taken(subject: Subject, offset: int) -> tuple[Tensor, Tensor, Tensor]:
    """The rows of a random ``W_pos`` the class returns at each position, their distance,
    and the output itself."""
    weights = _weights(POS_EMBED)
    module = subject.load(subject.build(), weights)
    with torch.no_grad():
        out = output(module(_tokens(N_CTX), offset=offset) if offset else module(_tokens(N_CTX)))
    expect_shape(out, (2, POS, D_MODEL), f"output with offset={offset}")
    row, distance = _nearest_rows(out, weights["W_pos"])
    return row, distance, out


def _wrong_row(row: Tensor, distance: Tensor, offset: int) -> None:
    wrong = ((row != torch.arange(POS) + offset) | (distance > TOLERANCE)).nonzero()
    if not len(wrong):
        return
    b, p = wrong[0].tolist()
    given = f"with offset={offset}, " if offset else ""
    rule = "W_pos[offset + p]" if offset else "W_pos[p]"
    if distance[b, p] <= TOLERANCE:
        raise CheckFailed(
            f"{given}position {p} got row {int(row[b, p])} of W_pos instead of row "
            f"{offset + p} — position p gets the row {rule}"
        )
    raise CheckFailed(
        f"{given}the vector at position {p} (batch {b}) is no row of W_pos (the nearest, row "
        f"{int(row[b, p])}, is off by {float(distance[b, p]):.3g}) — position p gets the row "
        f"{rule}, copied unchanged"
    )


def _one_row_per_position(subject: Subject) -> None:
    row, distance, out = _rows_taken(subject, offset=0)
    if max_difference(out, out[:, :1].expand_as(out), "output") <= TOLERANCE:
        raise CheckFailed(
            f"all {POS} positions got the same vector — different positions must differ: "
            f"position p gets the row W_pos[p]"
        )
    _wrong_row(row, distance, offset=0)


def _offset(subject: Subject) -> None:
    offset = N_CTX - POS  # so the last position takes the last row of W_pos
    row, distance, _ = _rows_taken(subject, offset)
    if bool((row == torch.arange(POS)).all()) and bool((distance <= TOLERANCE).all()):
        raise CheckFailed(
            f"with offset={offset}, positions 0..{POS - 1} got rows 0..{POS - 1} of W_pos, not "
            f"{offset}..{offset + POS - 1} — the positions ignore the offset: the tokens given "
            f"come after offset earlier ones (in a KV cache), so position p gets "
            f"W_pos[offset + p]"
        )
    _wrong_row(row, distance, offset)


def _pos_gradients(subject: Subject) -> None:
    reference = functools.partial(LearnedPositionalEmbedding, **POS_EMBED.kwargs())
    check_gradients(subject, _weights(POS_EMBED), reference, _tokens(N_CTX), TOLERANCE)


def _pos_learning(subject: Subject) -> None:
    accuracy, _ = train_position_labels(0, subject.build)
    if not accuracy >= 0.95:
        raise CheckFailed(
            f"after 150 steps a model with this positional embedding predicts a label fixed "
            f"per position for {accuracy:.1%} of positions (tfs's: 100%, chance 6.25%; needed "
            f"95%) — the model cannot read the position from it"
        )


POS_EMBED_CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _pos_shapes),
    ("same as tfs", _pos_same_as_tfs),
    ("independent of tokens", _independent_of_tokens),
    ("one row per position", _one_row_per_position),
    ("offset", _offset),
    ("gradients", _pos_gradients),
]

POS_EMBED_LEARNING: list[tuple[str, Check]] = [("learning: reading the position", _pos_learning)]
# The row probes read each position's row: rows picked by token id would fail them too.
POS_EMBED_NEEDS = {
    "one row per position": ["independent of tokens"],
    "offset": ["independent of tokens", "one row per position"],
}
POS_EMBED_CATALOGUE = Catalogue(
    correct=PosEmbed,
    mistakes=MISTAKES,
    probes=lambda: [(_weights(POS_EMBED, seed), (_tokens(N_CTX, seed + 1),)) for seed in (0, 2)],
)


def check_pos_embed(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's positional-embedding checks on ``cls``, built as ``cls(n_ctx=10,
    d_model=12)`` and called as ``module(tokens)`` and ``module(tokens, offset=k)``.

    The checks: the parameter ``W_pos [n_ctx, d_model]``; shapes and dtypes; the output
    equal to tfs's ``LearnedPositionalEmbedding`` under the same weights (within 1e-5,
    float32), with and without an offset; the output independent of the token ids;
    position p gets the row ``W_pos[p]``, so different positions differ; with ``offset=k``
    position p gets ``W_pos[k + p]``; gradients equal to tfs's; and, unless
    ``learning=False``, the learning check: with tfs's Embed and Unembed it lets a model
    read the position (well under a second). A class that computes one of the known
    mistakes of :mod:`~tfs_embeddings.checks.pos_embed_mistakes` is told which, first.
    """
    checks = POS_EMBED_CHECKS + (POS_EMBED_LEARNING if learning else [])
    return run_checks(
        "pos-embed",
        cls,
        POS_EMBED,
        checks,
        needs=POS_EMBED_NEEDS,
        catalogue=POS_EMBED_CATALOGUE,
    )
