"""The checks of the MLP: :func:`check_mlp`.

``check_mlp(MyMLP)`` builds the class as tfs builds its own (``MyMLP(d_model=8,
d_mlp=32)``), expects tfs's parameter names and shapes, and returns a :class:`Report`:
one line per check, and for each failure one sentence that names the concept with the
evidence. Use it in a pytest test with ``assert report.ok, str(report)``, or from the
shell with ``tfs check mlp FILE:CLASS``.
"""

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
    check_resized,
    check_same,
    expect_shape,
    max_difference,
    module_for_probes,
    output,
    run_checks,
)
from tfs_mlp.activations import gelu_formula
from tfs_mlp.checks.mlp_mistakes import MISTAKES
from tfs_mlp.checks.mlp_mistakes import MLP as Plain
from tfs_mlp.checks.tasks import D_MODEL, POS, train_parity
from tfs_mlp.mlp import MLP

__all__ = ["check_mlp"]

D_MLP = 32
"""With the parity task's ``D_MODEL`` and ``POS``: the learning check trains the class as
the other checks build it."""
TOLERANCE = 1e-5
"""float32: tfs's MLP (addmm, a written-out GELU backward) and a plain einsum with
autograd agree to about 1e-6 here, outputs and gradients."""
GELU_TOLERANCE = 1e-6
"""float64: GELU's formula computed any correct way agrees to 1e-12 (1e-7 even in float32);
0.0447 in place of 0.044715 moves it by 8.5e-6 (at x = -2)."""
GELU_XS = (-4, -3, -2.5, -2, -1.5, -1, -0.5, -0.1, 0.1, 0.5, 1, 1.5, 2, 2.5, 3, 4)

CONTRACT = Contract(
    signature='MLP(d_model, d_mlp, activation="gelu")',
    kwargs=lambda: {"d_model": D_MODEL, "d_mlp": D_MLP},
    params={
        "W_in": (D_MODEL, D_MLP),
        "b_in": (D_MLP,),
        "W_out": (D_MLP, D_MODEL),
        "b_out": (D_MODEL,),
    },
)


def _weights(seed: int = 0) -> dict[str, Tensor]:
    """Weights of std 1/sqrt(fan-in) and biases of std 0.5: the pre-activations reach the
    curved part of GELU, and every term matters."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "W_in": torch.randn(D_MODEL, D_MLP, generator=gen) / math.sqrt(D_MODEL),
        "b_in": torch.randn(D_MLP, generator=gen) * 0.5,
        "W_out": torch.randn(D_MLP, D_MODEL, generator=gen) / math.sqrt(D_MLP),
        "b_out": torch.randn(D_MODEL, generator=gen) * 0.5,
    }


def _x(seed: int = 1) -> Tensor:
    return torch.randn(2, POS, D_MODEL, generator=torch.Generator().manual_seed(seed))


def _run(module: nn.Module, x: Tensor) -> Tensor:
    return output(module(x))


def _reference(weights: dict[str, Tensor]) -> MLP:
    reference = MLP(D_MODEL, D_MLP)
    reference.load_state_dict(weights)
    return reference


def _shapes(subject: Subject) -> None:
    x = _x()
    expect_shape(_run(subject.build(), x), x.shape, "output for x [batch, pos, d_model]")
    check_dtypes(subject, lambda module, dtype: module(x.to(dtype)))
    small = subject.build(d_model=4, d_mlp=12)
    expect_shape(_run(small, x[..., :4]), (2, POS, 4), "output with d_model=4, d_mlp=12")
    check_resized(subject, small, "W_in", (4, 12), "d_model=4, d_mlp=12")


def _same_as_tfs(subject: Subject) -> None:
    weights, x = _weights(), _x()
    got = _run(subject.load(subject.build(), weights), x)
    check_same(got, _reference(weights)(x), TOLERANCE)


def _position_wise(subject: Subject) -> None:
    module, x = module_for_probes(subject, _weights()), _x()
    with torch.no_grad():
        before = _run(module, x)
        expect_shape(before, x.shape, "output")
        for source in range(POS):
            nudged = x.clone()
            nudged[0, source] += 1.0
            moved = (_run(module, nudged) - before).abs().amax(dim=-1).nan_to_num(math.inf)
            moved[0, source] = 0.0
            if not float(moved.max()) <= 1e-6:
                b, p = divmod(int(moved.argmax()), POS)
                raise CheckFailed(
                    f"the output of sequence {b} at position {p} changed when only the input "
                    f"of sequence 0 at position {source} changed — an MLP transforms each "
                    f"position on its own, along the last axis (d_model)"
                )


def _gelu(subject: Subject) -> None:
    """``W_in`` copies coordinate i of x to hidden unit i, ``W_out`` copies it back, the
    biases are zero: the output is the activation applied to x, elementwise."""
    weights = {name: torch.zeros(shape) for name, shape in CONTRACT.params.items()}
    weights["W_in"][:, :D_MODEL] = torch.eye(D_MODEL)
    weights["W_out"][:D_MODEL] = torch.eye(D_MODEL)
    xs = torch.tensor(GELU_XS, dtype=torch.float64)
    with torch.no_grad():
        out = _run(subject.load(subject.build(), weights).double(), xs.reshape(1, -1, D_MODEL))
    expect_shape(out, (1, len(GELU_XS) // D_MODEL, D_MODEL), "output")
    got, want = out.detach().reshape(-1).double(), gelu_formula(xs)
    gap = (got - want).abs().nan_to_num(math.inf)
    if not float(gap.max()) <= GELU_TOLERANCE:
        i = int(gap.argmax())
        others = {
            "the exact GELU 0.5 x (1 + erf(x / sqrt(2)))": 0.5 * xs * (1 + torch.erf(xs / 2**0.5)),
            "ReLU max(0, x)": xs.clamp(min=0.0),
        }
        like = [
            f", as {name} does"
            for name, v in others.items()
            if max_difference(got, v, "activation") <= GELU_TOLERANCE
        ]
        raise CheckFailed(
            f"at x = {GELU_XS[i]:g} the activation gave {float(got[i]):.6f} where GELU gives "
            f"{float(want[i]):.6f} (off by {float(gap[i]):.2g}, the worst of {len(GELU_XS)} values "
            f"in [-4, 4]){''.join(like)}"
            f" — use GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"
        )


def _every_parameter_used(subject: Subject) -> None:
    module, x = subject.load(subject.build(), _weights()), _x()
    check_every_parameter_used(module, lambda: module(x), list(CONTRACT.params))


def _gradients(subject: Subject) -> None:
    check_gradients(subject, _weights(), lambda: MLP(D_MODEL, D_MLP), _x(), TOLERANCE)


def _learning(subject: Subject) -> None:
    accuracy, loss = train_parity(subject.build, seed=0)
    if not (accuracy >= 0.99 and loss < 0.05):
        raise CheckFailed(
            f"after 300 steps the MLP gives the parity of three bits for {accuracy:.1%} of "
            f"positions, loss {loss:.3g} (tfs's: 100% and below 0.003; a linear map: at most "
            f"75%; needed 99% and below 0.05) — it does not learn a nonlinear function as an "
            f"MLP should"
        )


CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _shapes),
    ("same as tfs", _same_as_tfs),
    ("position-wise", _position_wise),
    ("GELU", _gelu),
    ("every weight and bias used", _every_parameter_used),
    ("gradients", _gradients),
]
LEARNING: list[tuple[str, Check]] = [("learning: parity", _learning)]
# The GELU probe feeds 16 values through two positions: mixed positions would mix them.
NEEDS = {"GELU": ["position-wise"]}


def _gelu_tail() -> tuple[dict[str, Tensor], tuple[Tensor]]:
    """The left tail of GELU, magnified: ``W_in`` copies x to the first hidden units,
    ``W_out`` copies them back times 100, and x runs over [-4.5, -2], where the exact GELU
    is up to 3x GPT-2's tanh form (elsewhere they differ by 5e-4 at most)."""
    weights = {name: torch.zeros(shape) for name, shape in CONTRACT.params.items()}
    weights["W_in"][:, :D_MODEL] = torch.eye(D_MODEL)
    weights["W_out"][:D_MODEL] = 100 * torch.eye(D_MODEL)
    return weights, (torch.linspace(-4.5, -2.0, 2 * D_MODEL).reshape(1, 2, D_MODEL),)


CATALOGUE = Catalogue(
    correct=Plain,
    mistakes=MISTAKES,
    probes=lambda: [*((_weights(seed), (_x(seed + 1),)) for seed in (0, 2)), _gelu_tail()],
)


def check_mlp(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's MLP checks on ``cls``, built as ``cls(d_model=8, d_mlp=32)``.

    The checks: parameter names and shapes (``W_in [d_model, d_mlp]``, ``b_in [d_mlp]``,
    ``W_out [d_mlp, d_model]``, ``b_out [d_model]``); shapes and dtypes; the output equal
    to tfs's ``MLP`` under the same weights (within 1e-5, float32); position-wise (no
    position's output depends on another position); the activation is GPT-2's tanh GELU
    (within 1e-6 at 16 points, float64); every weight and bias used; gradients equal to
    tfs's; and, unless ``learning=False``, the learning check: the MLP learns the parity of
    three bits, which no linear map can (under a second). A class that computes one of
    the known mistakes of :mod:`tfs_mlp.checks.mlp_mistakes` is told which, first.
    """
    checks = CHECKS + (LEARNING if learning else [])
    return run_checks("mlp", cls, CONTRACT, checks, needs=NEEDS, catalogue=CATALOGUE)
