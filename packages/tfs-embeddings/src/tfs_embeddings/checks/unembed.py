"""The checks of an unembedding: :func:`check_unembed`."""

from __future__ import annotations

import functools
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
    check_every_parameter_used,
    check_gradients,
    check_resized,
    check_same,
    expect_shape,
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
    _reference,
    _weights,
)
from tfs_embeddings.checks.tasks import train_deterministic_bigram
from tfs_embeddings.checks.unembed_mistakes import MISTAKES
from tfs_embeddings.checks.unembed_mistakes import Unembed as Plain
from tfs_embeddings.unembed import Unembed

__all__ = ["check_unembed"]

UNEMBED = Contract(
    signature="Unembed(d_model, d_vocab)",
    kwargs=lambda: {"d_model": D_MODEL, "d_vocab": D_VOCAB},
    params={"W_U": (D_MODEL, D_VOCAB), "b_U": (D_VOCAB,)},
)


def _residual(seed: int = 1) -> Tensor:
    return torch.randn(2, POS, D_MODEL, generator=torch.Generator().manual_seed(seed))


def _unembed_shapes(subject: Subject) -> None:
    x = _residual()
    expect_shape(output(subject.build()(x)), (2, POS, D_VOCAB), "logits for [batch, pos, d_model]")
    check_dtypes(subject, lambda module, dtype: output(module(x.to(dtype))))
    small = subject.build(d_model=5, d_vocab=7)
    expect_shape(output(small(x[..., :5])), (2, POS, 7), "logits with d_model=5, d_vocab=7")
    check_resized(subject, small, "W_U", (5, 7), "d_model=5, d_vocab=7")


def _unembed_same_as_tfs(subject: Subject) -> None:
    x = _residual()
    got = output(_loaded(subject, UNEMBED)(x))
    check_same(got, _reference(Unembed, UNEMBED)(x), TOLERANCE)


def _logits(subject: Subject) -> None:
    """Logits are unnormalised: a softmax (or log-softmax) in the unembedding is a bug
    that the loss then applies a second time."""
    with torch.no_grad():
        out = output(_loaded(subject, UNEMBED)(_residual()))
    expect_shape(out, (2, POS, D_VOCAB), "logits")
    ones = torch.ones(2, POS, dtype=torch.float64)
    if (out >= 0).all() and torch.allclose(out.double().sum(-1), ones, atol=1e-4):
        kind, sums = "probabilities", "the outputs are >= 0 and sum to 1"
    elif torch.allclose(out.double().exp().sum(-1), ones, atol=1e-4):
        kind, sums = "log-probabilities", "the exponentials of the outputs sum to 1"
    else:
        return
    raise CheckFailed(
        f"at every position {sums}, like {kind} — return the logits x W_U + b_U; the "
        f"softmax belongs to the loss (cross-entropy applies it) and to sampling"
    )


def _unembed_used(subject: Subject) -> None:
    module, x = _loaded(subject, UNEMBED), _residual()
    check_every_parameter_used(module, lambda: module(x), list(UNEMBED.params))


def _unembed_gradients(subject: Subject) -> None:
    reference = functools.partial(Unembed, **UNEMBED.kwargs())
    check_gradients(subject, _weights(UNEMBED), reference, _residual(), TOLERANCE)


def _unembed_learning(subject: Subject) -> None:
    accuracy, smallest = train_deterministic_bigram(0, make_unembed=subject.build)
    _bigram_learned(accuracy, smallest, "with tfs's Embed, this unembedding does not train")


UNEMBED_CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _unembed_shapes),
    ("same as tfs", _unembed_same_as_tfs),
    ("logits", _logits),
    ("every weight and bias used", _unembed_used),
    ("gradients", _unembed_gradients),
]

UNEMBED_LEARNING: list[tuple[str, Check]] = [("learning: bigrams", _unembed_learning)]
UNEMBED_CATALOGUE = Catalogue(
    correct=Plain,
    mistakes=MISTAKES,
    probes=lambda: [(_weights(UNEMBED, seed), (_residual(seed + 1),)) for seed in (0, 2)],
)


def check_unembed(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's unembedding checks on ``cls``, built as ``cls(d_model=12, d_vocab=20)``.

    The checks: the parameters ``W_U [d_model, d_vocab]`` and ``b_U [d_vocab]``; shapes and
    dtypes; the logits equal to tfs's ``Unembed`` under the same weights (within 1e-5,
    float32); logits, not probabilities; every weight and bias used; gradients equal to
    tfs's; and, unless ``learning=False``, the learning check: with tfs's Embed it learns a
    bigram map (well under a second). A class that computes one of the known mistakes of
    :mod:`~tfs_embeddings.checks.unembed_mistakes` is told which, first.
    """
    checks = UNEMBED_CHECKS + (UNEMBED_LEARNING if learning else [])
    return run_checks("unembed", cls, UNEMBED, checks, catalogue=UNEMBED_CATALOGUE)
