"""qkv_projection (one product over the side-by-side weights) against the per-head formula.

Reference: ``qkv_formula``, ``x W[h] + b[h]`` per head by einsum, differentiated by autograd.
Tolerance: fp32 atol = rtol = 1e-5; float64 gradcheck. Every test runs at one and at two
intra-op threads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from tfs_attention.qkv_projection import qkv_formula, qkv_projection, side_by_side

pytestmark = pytest.mark.usefixtures("intra_op_threads")


def parameters(dtype: torch.dtype = torch.float32) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 6), (3, 6, 4), (3, 6, 4), (3, 6, 4), (3, 4), (3, 4), (3, 4)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def test_outputs_and_gradients_equal_the_per_head_formula() -> None:
    inputs = parameters()
    got = qkv_projection(*inputs)
    assert got.shape == (5, 3, 3, 4)  # [rows, q/k/v, head, d_head]
    expected = qkv_formula(*inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    grad = torch.randn(got.shape, generator=torch.Generator().manual_seed(1))
    for a, b in zip(
        torch.autograd.grad(got, inputs, grad),
        torch.autograd.grad(expected, inputs, grad),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_gradcheck_in_float64() -> None:
    assert torch.autograd.gradcheck(qkv_projection, tuple(parameters(torch.float64)))


def test_backward_keeps_the_input_and_the_side_by_side_weight(
    saved_for_backward: Callable[..., list[Tensor]],
) -> None:
    """What autograd keeps for backward: ``x`` and the ``[d_model, 3 * head * d_head]``
    weight (one weight-sized tensor per call), not a copy of the output."""
    inputs = parameters()
    saved = saved_for_backward(qkv_projection, *inputs)
    x = inputs[0]
    assert any(t is x for t in saved)
    others = [t for t in saved if t is not x]
    assert {tuple(t.shape) for t in others} == {(6, 3 * 3 * 4)}
    torch.testing.assert_close(others[0], side_by_side(*inputs[1:])[0], rtol=0, atol=0)


def test_equals_the_formula_where_threads_split_the_work(
    compare_fast_op: Callable[..., None],
) -> None:
    """4,096 rows of width 64 (the products and the bias sums are split across threads),
    and two runs give the same bits. rtol 1e-5, atol 1e-4: the gradient of x sums 192
    products of unit size in another order (measured up to 1.7e-5 apart)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(4096, 64), (4, 64, 16), (4, 64, 16), (4, 64, 16), (4, 16), (4, 16), (4, 16)]
    inputs = tuple(torch.randn(s, generator=g) for s in shapes)
    compare_fast_op(qkv_projection, qkv_formula, inputs, rtol=1e-5, atol=1e-4)
