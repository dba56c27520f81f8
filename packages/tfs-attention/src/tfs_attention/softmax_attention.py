"""The attention core ``z = softmax(q k^T + mask) v``, in blocks of destinations, with its
backward pass written out."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

BLOCK = 32
"""Destinations per block (measured on a 2-core CPU at pos 128-1024: 16 to 32 fastest)."""


def _blocks(n_dest: int, n_src: int, causal: bool) -> list[tuple[int, int, int]]:
    """``(start, stop, end)``: destinations ``start:stop`` read sources ``:end``.

    Destination ``i`` sits at source position ``i + n_src - n_dest``: with a cache of
    earlier positions, the destinations are the last ones.
    """
    offset = n_src - n_dest
    return [
        (
            start,
            min(start + BLOCK, n_dest),
            offset + min(start + BLOCK, n_dest) if causal else n_src,
        )
        for start in range(0, n_dest, BLOCK)
    ]


def _block_pattern(
    q: Tensor, k: Tensor, start: int, stop: int, end: int, causal: bool, padding: Tensor | None
) -> Tensor:
    """``softmax(q[start:stop] k[:end]^T)`` with hidden sources at ``-inf``; a destination
    that sees no source at all gets a row of zeros. Tensors are ``[batch * head, pos, d]``."""
    scores = torch.bmm(q[:, start:stop], k[:, :end].transpose(1, 2))
    if causal:
        # Only the last (stop - start) sources lie after some destination of the block.
        width = stop - start
        future = torch.ones(width, width, dtype=torch.bool, device=q.device).triu(1)
        scores[:, :, end - width :].masked_fill_(future, float("-inf"))
    if padding is None:
        return torch.softmax(scores, dim=-1)
    scores.masked_fill_(padding[:, :, :end], float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num_(0.0)  # all hidden: 0/0


class _SoftmaxAttention(torch.autograd.Function):
    r"""Per head, with ``A = softmax(S)``, ``S = q k^T`` (``-inf`` where hidden) and
    ``z = A v``, the gradients given ``dz = dL/dz`` are::

        dv = A^T dz
        dA = dz v^T
        dS = A * (dA - D),   D_i = sum_j dA_ij A_ij = dz_i . z_i
        dq = dS k,           dk = dS^T q

    (the softmax Jacobian ``dS_ij = A_ij (dA_ij - sum_k A_ik dA_ik)``, with the row sums
    taken from ``z`` as in FlashAttention; Dao et al. 2022, appendix B.2).

    Destinations go in blocks of :data:`BLOCK` rows; a causal block reads only the
    sources up to its last destination, which skips most of the hidden upper triangle,
    and a block's ``[dest, src]`` tensors stay small enough to stay in cache. Forward
    keeps only ``q, k, v, z``; backward recomputes each block's pattern. So no
    ``[dest, src]`` tensor outlives its block: memory per layer grows with ``pos``, not
    ``pos^2``, at the price of one more ``q k^T`` product and softmax in backward.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, causal: bool, keep: Tensor | None
    ) -> Tensor:
        batch, n_heads, n_dest, _ = q.shape
        # Every product is a plain bmm over [batch * head, pos, d_head].
        q3, k3, v3 = (t.reshape(batch * n_heads, t.shape[2], t.shape[3]) for t in (q, k, v))
        padding = None if keep is None else (~keep).repeat_interleave(n_heads, 0)[:, None, :]
        # z is laid out [batch, dest, head, d_head]: the caller concatenates the heads per
        # position, which is then a view, not a copy.
        z = q.new_empty(batch, n_dest, n_heads, v.shape[-1])
        for start, stop, end in _blocks(n_dest, k.shape[2], causal):
            pattern = _block_pattern(q3, k3, start, stop, end, causal, padding)
            block = torch.bmm(pattern, v3[:, :end])
            z[:, start:stop] = block.view(batch, n_heads, stop - start, -1).transpose(1, 2)
        ctx.causal, ctx.padding = causal, padding  # type: ignore[attr-defined]
        ctx.save_for_backward(q3, k3, v3, z)
        return z.transpose(1, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_z: Tensor) -> tuple[Tensor, Tensor, Tensor, None, None]:
        q3, k3, v3, z = ctx.saved_tensors  # type: ignore[attr-defined]
        causal: bool = ctx.causal  # type: ignore[attr-defined]
        padding: Tensor | None = ctx.padding  # type: ignore[attr-defined]
        batch, n_heads, n_dest, d_head = grad_z.shape
        row_sums = (grad_z * z.transpose(1, 2)).sum(dim=-1, keepdim=True)
        grad_z3 = grad_z.reshape(batch * n_heads, n_dest, d_head)
        row_sums = row_sums.reshape(batch * n_heads, n_dest, 1)
        grad_q = torch.empty_like(q3)
        grad_k = torch.zeros_like(k3)
        grad_v = torch.zeros_like(v3)
        for start, stop, end in _blocks(n_dest, k3.shape[1], causal):
            pattern = _block_pattern(q3, k3, start, stop, end, causal, padding)
            grad_block = grad_z3[:, start:stop]
            grad_v[:, :end] += torch.bmm(pattern.transpose(1, 2), grad_block)
            grad_scores = torch.bmm(grad_block, v3[:, :end].transpose(1, 2))
            grad_scores.sub_(row_sums[:, start:stop]).mul_(pattern)
            grad_q[:, start:stop] = torch.bmm(grad_scores, k3[:, :end])
            grad_k[:, :end] += torch.bmm(grad_scores.transpose(1, 2), q3[:, start:stop])
        grad_q, grad_k, grad_v = (
            t.view(batch, n_heads, *t.shape[1:]) for t in (grad_q, grad_k, grad_v)
        )
        return grad_q, grad_k, grad_v, None, None


def softmax_attention(
    q: Float[Tensor, "batch head dest d_head"],
    k: Float[Tensor, "batch head src d_head"],
    v: Float[Tensor, "batch head src d_head"],
    *,
    causal: bool,
    attention_mask: Bool[Tensor, "batch src"] | None = None,
) -> Float[Tensor, "batch head dest d_head"]:
    """``softmax(q k^T + mask) v`` per head; ``q`` must already carry the ``1/sqrt(d_head)``.

    The destinations are the last ``dest`` of the ``src`` positions. ``causal`` hides the
    sources after each destination, ``attention_mask`` (``True`` = may be attended to)
    hides sources such as padding; a destination that sees no source gets zeros. The
    pattern itself is never returned (nor kept): code that needs it, a hook or attention
    dropout, uses the step-by-step form in :class:`~tfs_attention.MultiHeadAttention`,
    which this is tested equal to.
    """
    z: Tensor = _SoftmaxAttention.apply(q, k, v, causal, attention_mask)  # type: ignore[no-untyped-call]
    return z
