"""fast_op: which of an op's three forms runs where. A toy op whose forms are told apart by
a record of the calls stands in for the real ones (whose results the packages' own tests
compare)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from tfs_core.fast_op import fast_op, formula_needed

calls: list[str] = []


def formula(x: Tensor, scale: float) -> Tensor:
    calls.append("formula")
    return (x * scale).square()


def forward(x: Tensor, scale: float) -> Tensor:
    calls.append("forward")
    return (x * scale).square()


class _Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.scale = scale
        return (x * scale).square()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        if formula_needed(grad):
            calls.append("backward by the formula")
            return torch.func.vjp(lambda x: formula(x, ctx.scale), x)[1](grad)[0], None
        calls.append("written-out backward")
        return 2 * ctx.scale**2 * x * grad, None


def with_backward(x: Tensor, scale: float) -> Tensor:
    calls.append("with backward")
    y: Tensor = _Square.apply(x, scale)  # type: ignore[no-untyped-call]
    return y


def square(x: Tensor, scale: float = 3.0) -> Tensor:
    return fast_op(formula, forward, with_backward, x, scale)


@pytest.fixture(autouse=True)
def _fresh_record() -> None:
    calls.clear()


def test_where_autograd_records_nothing_the_bare_forward_runs() -> None:
    x = torch.randn(4)
    square(x)
    with torch.no_grad():
        square(x.requires_grad_())
    with torch.inference_mode():
        square(torch.randn(4, requires_grad=True))
    assert calls == ["forward"] * 3


def test_when_autograd_records_the_function_runs_with_its_written_out_backward() -> None:
    x = torch.randn(4, requires_grad=True)
    (grad,) = torch.autograd.grad(square(x).sum(), x)
    assert calls == ["with backward", "written-out backward"]
    torch.testing.assert_close(grad, 18 * x.detach())


def test_a_second_derivative_differentiates_the_formula() -> None:
    x = torch.randn(4, requires_grad=True)
    (grad,) = torch.autograd.grad(square(x).sum(), x, create_graph=True)
    assert calls[:2] == ["with backward", "backward by the formula"]
    (second,) = torch.autograd.grad(grad.sum(), x)
    torch.testing.assert_close(second, torch.full((4,), 18.0))


def test_under_torch_func_the_formula_itself_runs() -> None:
    x = torch.randn(4)
    grad = torch.func.grad(lambda x: square(x).sum())(x)
    batched = torch.func.vmap(square)(torch.randn(2, 4))
    assert calls == ["formula", "formula"]
    torch.testing.assert_close(grad, 18 * x)
    assert batched.shape == (2, 4)


def test_batched_gradients_turn_backward_to_the_formula() -> None:
    x = torch.randn(3, requires_grad=True)
    y = square(x)
    (jac,) = torch.autograd.grad(y, x, torch.eye(3), is_grads_batched=True)
    assert "backward by the formula" in calls
    torch.testing.assert_close(jac, torch.diag(18 * x.detach()))
