"""Queries, keys and values of every head from one matrix product."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


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


def side_by_side(
    W_Q: Float[Tensor, "head d_model d_head"],
    W_K: Float[Tensor, "head d_model d_head"],
    W_V: Float[Tensor, "head d_model d_head"],
    b_Q: Float[Tensor, "head d_head"],
    b_K: Float[Tensor, "head d_head"],
    b_V: Float[Tensor, "head d_head"],
) -> tuple[Float[Tensor, "d_model qkv"], Float[Tensor, " qkv"]]:
    """``W = [W_Q | W_K | W_V]`` and ``b = [b_Q | b_K | b_V]`` (``qkv = 3 * head * d_head``),
    so that ``(x W + b).view(rows, 3, head, d_head)`` is :func:`qkv_formula`: column block
    ``(i, h)`` of ``W`` is head ``h`` of ``W_Q``, ``W_K``, ``W_V`` for ``i = 0, 1, 2``."""
    d_model = W_Q.shape[1]
    # One copy: stacking [d_model, head, d_head] views lays out [d_model, 3, head, d_head].
    weight = torch.stack([W.transpose(0, 1) for W in (W_Q, W_K, W_V)], dim=1).view(d_model, -1)
    return weight, torch.stack([b_Q, b_K, b_V]).reshape(-1)


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
    ``h``, stacked as ``[rows, 3, head, d_head]``: :func:`qkv_formula` as one matrix product
    ``x [W_Q | W_K | W_V] + [b_Q | b_K | b_V]`` (:func:`side_by_side`) instead of one per
    head.

    Plain tensor operations throughout, so autograd differentiates it to any order and
    under ``torch.func`` transforms. For backward autograd keeps the side-by-side weight,
    a ``[d_model, 3 * head * d_head]`` tensor per call: rebuilding it in a written-out
    backward instead saved that memory but made a training step about 1% slower.
    """
    weight, bias = side_by_side(W_Q, W_K, W_V, b_Q, b_K, b_V)
    qkv = torch.addmm(bias, x, weight)
    return qkv.view(x.shape[0], 3, W_Q.shape[0], W_Q.shape[2])
