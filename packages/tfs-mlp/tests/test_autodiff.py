"""Second derivatives and torch.func transforms through the MLP and its activations.

GELU's written-out backward serves plain first-order gradients; where a gradient is
differentiated again, or under ``torch.func``, ``gelu_formula`` runs instead. The helper
(``verify_autodiff`` in the repository's conftest.py) compares every transform with ordinary
autograd in float64 at rtol 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from tfs_mlp import MLP, gelu
from tfs_mlp.activations import gelu_formula


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_mlp(
    activation: str,
    verify_autodiff: Callable[..., None],
    float64_params: Callable[..., dict[str, Tensor]],
) -> None:
    mlp = MLP(d_model=4, d_mlp=8, activation=activation)
    x = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    verify_autodiff(lambda p, i: functional_call(mlp, p, (i["x"],)), float64_params(mlp), {"x": x})


def test_gelu(verify_autodiff: Callable[..., None]) -> None:
    x = torch.linspace(-4.0, 4.0, 12, dtype=torch.float64).view(3, 4)
    verify_autodiff(lambda p, i: gelu(i["x"]), {}, {"x": x})


def test_gelu_second_derivative_is_the_formula_s() -> None:
    """d^2/dx^2 of gelu, through its fast forward and create_graph backward, equals that
    of the formula, and the formula's equals the closed form of d/dx (s (1 + u - u s))."""
    x = torch.linspace(-6.0, 6.0, 101, dtype=torch.float64, requires_grad=True)
    second = []
    for f in (gelu, gelu_formula):
        (first,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
        second.append(torch.autograd.grad(first.sum(), x)[0])
    torch.testing.assert_close(second[0], second[1], rtol=1e-12, atol=1e-14)
    assert second[0].abs().max() > 0.5  # GELU bends near 0: a real second derivative
