"""The checks tfs's LayerNorm passes, runnable on any LayerNorm class."""

from __future__ import annotations

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
    check_every_parameter_used,
    check_gradients,
    check_same,
    expect_shape,
    max_difference,
    module_for_probes,
    output,
    random_weights,
    run_checks,
)
from tfs_decoder.checks import layernorm_mistakes
from tfs_decoder.layernorm import LayerNorm

D_MODEL, POS, EPS = 16, 5, 1e-5
TOLERANCE = 1e-5
"""float32: normalised values of order 1 agree with tfs's to about 1e-6."""

CONTRACT = Contract(
    signature="LayerNorm(d_model, eps=1e-5)",
    kwargs=lambda: {"d_model": D_MODEL},
    params={"w": (D_MODEL,), "b": (D_MODEL,)},
)
IDENTITY = {"w": torch.ones(D_MODEL), "b": torch.zeros(D_MODEL)}


def _weights(seed: int = 0) -> dict[str, Tensor]:
    return random_weights(CONTRACT.params, seed, std=0.5)


def _x(seed: int = 1) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, POS, D_MODEL, generator=gen) * 2 + torch.randn(2, POS, 1, generator=gen)


def _run(module: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return output(module(x)).detach()


def _reference(weights: dict[str, Tensor]) -> LayerNorm:
    reference = LayerNorm(D_MODEL)
    reference.load_state_dict(weights)
    return reference


def _shapes(subject: Subject) -> None:
    x = _x()
    expect_shape(_run(subject.build(), x), x.shape, "output for x [batch, pos, d_model]")
    check_dtypes(subject, lambda module, dtype: module(x.to(dtype)))
    expect_shape(_run(subject.build(d_model=8), x[..., :8]), (2, POS, 8), "output with d_model=8")


def _same_as_tfs(subject: Subject) -> None:
    weights, x = _weights(), _x()
    got = _run(subject.load(subject.build(), weights), x)
    check_same(got, _reference(weights)(x), TOLERANCE)


def _divisors(subject: Subject, x: Tensor, **overrides: float) -> Tensor:
    """With ``w = 1, b = 0`` and rows of mean zero, the number each row was divided by
    (least squares fit of ``out = x / divisor``), after checking that fit is exact."""
    out = _run(subject.load(subject.build(**overrides), IDENTITY), x)
    expect_shape(out, x.shape, "output")
    divisor = (x * x).sum(dim=-1) / (x * out).sum(dim=-1)
    misfit = float((out - x / divisor[..., None]).abs().nan_to_num(math.inf).max())
    if not misfit < 1e-4:
        raise CheckFailed(
            f"with w = 1, b = 0 and rows of mean zero the output is not the input divided by "
            f"one number per position (off by up to {misfit:.3g}) — see the other checks"
        )
    return divisor


def _variance_factor(subject: Subject) -> float:
    """``f`` such that rows of variance ``var`` (1e4, where eps is negligible) were divided
    by ``sqrt(f * var)``: 1 for the mean of squared deviations."""
    x = _x()
    x = x - x.mean(dim=-1, keepdim=True)
    # Every row of mean 0 and variance 1e4: eps is negligible, and the rows are alike.
    x = x / x.square().mean(dim=-1, keepdim=True).sqrt() * 100.0
    return float((_divisors(subject, x).square() / 1e4).median())


def _variance(subject: Subject) -> None:
    factor = _variance_factor(subject)
    if abs(factor - 1.0) < 1e-3:
        return
    unbiased = D_MODEL / (D_MODEL - 1)
    if abs(factor - unbiased) < 1e-3:
        raise CheckFailed(
            f"on rows of variance 10000 the output was divided by sqrt({factor:.4f} x var), "
            f"the factor d_model / (d_model - 1) = {D_MODEL}/{D_MODEL - 1} of the unbiased "
            f"estimate — use the mean of squared deviations (biased), not the unbiased "
            f"estimate (unbiased=False or correction=0)"
        )
    raise CheckFailed(
        f"on rows of variance 10000 the output was divided by sqrt({factor:.4g} x var) — "
        f"divide by sqrt(var + eps), var the mean of squared deviations from the mean over "
        f"d_model"
    )


def _eps(subject: Subject) -> None:
    """On a row ``±sqrt(eps)`` (mean 0, variance ``v = eps``) the output is ``±sqrt(v / (v +
    eps)) = ±0.7071``; each way of misplacing eps gives its own value. The variance the
    class computes (``f * v``, see :func:`_variance_factor`) is taken as it is: that is
    the 'variance' check's business."""
    f = _variance_factor(subject)
    inside = "eps belongs inside the square root: (x - mean) / sqrt(var + eps)"
    for eps in (EPS, 1e-3):
        s = math.sqrt(eps)
        x = torch.tensor([s, -s]).repeat(D_MODEL // 2).expand(1, 1, D_MODEL)
        overrides = {} if eps == EPS else {"eps": eps}
        got = s / float(_divisors(subject, x, **overrides)[0, 0])  # |output|
        want = s / math.sqrt(f * eps + eps)
        if abs(got - want) <= 2e-4:
            continue
        guesses = [
            (s / (math.sqrt(f * eps) + eps), ", as if divided by sqrt(var) + eps", inside),
            (s / math.sqrt(f * eps), ", as if eps were left out", "add eps: sqrt(var + eps)"),
            (
                s / math.sqrt(f * eps + EPS),
                f", as if eps were {EPS:g}",
                "use the eps argument, not a fixed value",
            ),
        ]
        seen, advice = next(
            ((seen, advice) for value, seen, advice in guesses if abs(value - got) <= 2e-4),
            ("", inside),
        )
        raise CheckFailed(
            f"on a row of ±{s:.3g} (variance = eps = {eps:g}) the output is ±{got:.4f}, "
            f"not ±{want:.4f}{seen} — {advice}"
        )


def _axis(subject: Subject) -> None:
    x = _x()
    nudged = x.clone()
    nudged[1, 3] += torch.randn(D_MODEL, generator=torch.Generator().manual_seed(2))
    module = module_for_probes(subject, _weights())
    change = (_run(module, nudged) - _run(module, x)).abs().amax(dim=-1).nan_to_num(math.inf)
    expect_shape(change, (2, POS), "output")
    change[1, 3] = 0.0
    if not float(change.max()) <= 1e-6:
        row, position = divmod(int(change.argmax()), POS)
        raise CheckFailed(
            f"the output at batch row {row}, position {position} changed by "
            f"{float(change.max()):.3g} when only the input at batch row 1, position 3 "
            f"changed — normalise each position over d_model alone: mean and variance over "
            f"the last axis (dim=-1, keepdim=True)"
        )


def _mean(subject: Subject) -> None:
    """With ``w = 1, b = 0`` a shift of every input changes nothing: with other gains a
    class that scales by ``w`` before normalising would fail here for the wrong reason."""
    x = _x()
    shift = 3.7  # the same everywhere: the 'axis' check tells which axis
    module = module_for_probes(subject, IDENTITY)
    moved = max_difference(_run(module, x + shift), _run(module, x), "output")
    if not moved <= 1e-4:
        raise CheckFailed(
            f"adding {shift} to every input changed the output by up to "
            f"{moved:.3g} — subtract the mean over d_model (x - x.mean(dim=-1, keepdim=True)), "
            f"and take the variance of what is left"
        )


def _every_parameter_used(subject: Subject) -> None:
    weights, x = _weights(), _x()
    module = subject.load(subject.build(), weights)
    check_every_parameter_used(module, lambda: module(x), list(CONTRACT.params))


def _gradients(subject: Subject) -> None:
    check_gradients(subject, _weights(), lambda: LayerNorm(D_MODEL), _x(), 1e-4)


CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _shapes),
    ("same as tfs", _same_as_tfs),
    ("axis", _axis),
    ("mean", _mean),
    ("variance", _variance),
    ("eps", _eps),
    ("every weight and bias used", _every_parameter_used),
    ("gradients", _gradients),
]
# The divisor the variance and eps probes measure is one per position only on the right axis.
NEEDS = {"variance": ["axis"], "eps": ["axis"]}
CATALOGUE = Catalogue(
    correct=layernorm_mistakes.LayerNorm,
    mistakes=layernorm_mistakes.MISTAKES,
    # Rows of variance about 4e-5 as well: there eps's place shows.
    probes=lambda: [(_weights(0), (_x(1),)), (_weights(2), (_x(3) * 3e-3,))],
)


def check_layernorm(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's LayerNorm checks on ``cls``, built as ``cls(d_model=16)``.

    The checks: parameter names and shapes (``w [d_model]``, ``b [d_model]``); shapes and
    dtypes; the output equal to tfs's ``LayerNorm`` under the same weights (within 1e-5,
    float32); the biased variance (mean of squared deviations); eps inside the square root
    (and the ``eps`` argument used); each position normalised over ``d_model`` alone; the
    mean subtracted; every weight and bias used; gradients equal to tfs's.

    ``learning`` is accepted so that every component's check has the same signature;
    LayerNorm has no learning check (it learns only as part of a model).
    """
    del learning
    return run_checks("layernorm", cls, CONTRACT, CHECKS, needs=NEEDS, catalogue=CATALOGUE)
