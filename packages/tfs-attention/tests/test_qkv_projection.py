"""qkv_projection (one product, written-out backward) against the per-head formula.

Reference: ``x W[h] + b[h]`` per head by einsum, differentiated by autograd. Tolerance:
fp32 atol = rtol = 1e-5; float64 gradcheck for the hand-written backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tfs_attention.qkv_projection import qkv_projection


def parameters(dtype: torch.dtype = torch.float32) -> list[Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 6), (3, 6, 4), (3, 6, 4), (3, 6, 4), (3, 4), (3, 4), (3, 4)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


def test_outputs_and_gradients_equal_the_per_head_formula() -> None:
    x, W_Q, W_K, W_V, b_Q, b_K, b_V = inputs = parameters()
    got = qkv_projection(*inputs)
    assert got.shape == (5, 3, 3, 4)  # [rows, q/k/v, head, d_head]
    expected = torch.stack(
        [torch.einsum("rd,hde->rhe", x, W) + b for W, b in ((W_Q, b_Q), (W_K, b_K), (W_V, b_V))],
        dim=1,
    )
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


def test_only_the_input_and_the_parameters_are_kept() -> None:
    """The side-by-side weight matrix is rebuilt in backward, not kept per layer."""
    inputs = parameters()
    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        qkv_projection(*inputs)
    assert [id(t) for t in saved] == [id(t) for t in inputs[:4]]
