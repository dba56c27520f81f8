"""Queries, keys and values of every head from one matrix product."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from torch.autograd.function import FunctionCtx

from tfs_attention._backward import formula_needed, graph_needed


def qkv_formula(
    x: Float[Tensor, "rows d_model"],
    W_Q: Float[Tensor, "head d_model d_head"],
    W_K: Float[Tensor, "head d_model d_head"],
    W_V: Float[Tensor, "head d_model d_head"],
    b_Q: Float[Tensor, "head d_head"],
    b_K: Float[Tensor, "head d_head"],
    b_V: Float[Tensor, "head d_head"],
) -> Float[Tensor, "rows 3 head d_head"]:
    """``x W[h] + b[h]`` per head for ``W, b`` = ``W_Q, b_Q``, ``W_K, b_K``, ``W_V, b_V``, as
    written and differentiated by autograd: the definition :func:`qkv_projection` computes
    faster, the path it takes under ``torch.func`` transforms and for second derivatives,
    and the oracle its tests compare with."""
    q, k, v = (
        torch.einsum("rm,hmd->rhd", x, W) + b for W, b in ((W_Q, b_Q), (W_K, b_K), (W_V, b_V))
    )
    return torch.stack([q, k, v], dim=1)


def _side_by_side(W_Q: Tensor, W_K: Tensor, W_V: Tensor) -> Tensor:
    """``[head, d_model, d_head]`` x 3 -> ``[d_model, 3 * head * d_head]``: column block
    ``(i, h)`` is head ``h`` of ``W_Q``, ``W_K``, ``W_V`` for ``i = 0, 1, 2``."""
    d_model = W_Q.shape[1]
    # One copy: stacking [d_model, head, d_head] views lays out [d_model, 3, head, d_head].
    return torch.stack([W.transpose(0, 1) for W in (W_Q, W_K, W_V)], dim=1).view(d_model, -1)


def side_by_side(
    W_Q: Float[Tensor, "head d_model d_head"],
    W_K: Float[Tensor, "head d_model d_head"],
    W_V: Float[Tensor, "head d_model d_head"],
    b_Q: Float[Tensor, "head d_head"],
    b_K: Float[Tensor, "head d_head"],
    b_V: Float[Tensor, "head d_head"],
) -> tuple[Float[Tensor, "d_model qkv"], Float[Tensor, " qkv"]]:
    """``W = [W_Q | W_K | W_V]`` and ``b = [b_Q | b_K | b_V]`` (``qkv = 3 * head * d_head``),
    so that ``(x W + b).view(rows, 3, head, d_head)`` is :func:`qkv_formula`."""
    return _side_by_side(W_Q, W_K, W_V), torch.stack([b_Q, b_K, b_V]).reshape(-1)


class _QKVProjection(torch.autograd.Function):
    """:func:`qkv_formula` as ``x [W_Q | W_K | W_V] + [b_Q | b_K | b_V]``, one ``addmm``
    instead of one per head.

    Backward (``g = dL/d(qkv)``): ``dx = g W^T``, ``dW = x^T g``, ``db = sum_rows g``, with
    ``dW`` and ``db`` split back into the per-head parameters. Only the inputs are kept;
    the side-by-side matrix is rebuilt in backward rather than kept as one more
    ``[d_model, 3 * head * d_head]`` tensor per layer.

    When the gradient is itself to be differentiated (``create_graph=True``: grad mode is
    on in ``backward``), or under a ``torch.func`` transform of the backward pass,
    backward differentiates :func:`qkv_formula` instead, which autograd can differentiate
    again.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        W_Q: Tensor,
        W_K: Tensor,
        W_V: Tensor,
        b_Q: Tensor,
        b_K: Tensor,
        b_V: Tensor,
    ) -> Tensor:
        ctx.save_for_backward(x, W_Q, W_K, W_V, b_Q, b_K, b_V)
        weight, bias = side_by_side(W_Q, W_K, W_V, b_Q, b_K, b_V)
        return torch.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, ...]:
        inputs = ctx.saved_tensors  # type: ignore[attr-defined]
        x, W_Q, W_K, W_V = inputs[:4]
        n_heads, d_model, d_head = W_Q.shape
        if formula_needed(grad):
            grad = grad.view(-1, 3, n_heads, d_head)
            return tuple(torch.func.vjp(qkv_formula, *inputs)[1](grad))
        grad_x = grad @ _side_by_side(W_Q, W_K, W_V).T
        # [d_model, 3, head, d_head] -> [3, head, d_model, d_head]
        grad_w = (x.T @ grad).view(d_model, 3, n_heads, d_head).permute(1, 2, 0, 3)
        grad_b = grad.sum(dim=0).view(3, n_heads, d_head)
        return grad_x, *grad_w.unbind(0), *grad_b.unbind(0)


def qkv_projection(
    x: Float[Tensor, "rows d_model"],
    W_Q: Float[Tensor, "head d_model d_head"],
    W_K: Float[Tensor, "head d_model d_head"],
    W_V: Float[Tensor, "head d_model d_head"],
    b_Q: Float[Tensor, "head d_head"],
    b_K: Float[Tensor, "head d_head"],
    b_V: Float[Tensor, "head d_head"],
) -> Float[Tensor, "rows 3 head d_head"]:
    """``x W_Q[h] + b_Q[h]``, ``x W_K[h] + b_K[h]``, ``x W_V[h] + b_V[h]`` for every head
    ``h``, stacked as ``[rows, 3, head, d_head]``, from one matrix product (see
    ``_QKVProjection``; where autograd records nothing, the product alone); under
    ``torch.func`` transforms (``grad``, ``vmap``, ``jvp``, ...), :func:`qkv_formula` itself."""
    if torch._C._are_functorch_transforms_active():
        return qkv_formula(x, W_Q, W_K, W_V, b_Q, b_K, b_V)
    n_heads, _, d_head = W_Q.shape
    inputs = (x, W_Q, W_K, W_V, b_Q, b_K, b_V)
    if graph_needed(*inputs):
        qkv: Tensor = _QKVProjection.apply(*inputs)  # type: ignore[no-untyped-call]
    else:
        weight, bias = side_by_side(W_Q, W_K, W_V, b_Q, b_K, b_V)
        qkv = torch.addmm(bias, x, weight)
    return qkv.view(x.shape[0], 3, n_heads, d_head)
