"""The attention core ``z = softmax(q k^T + mask) v``: the formula, and the same in blocks of
destinations with its backward pass written out."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from torch.autograd.function import FunctionCtx

from tfs_core.fast_op import fast_op, formula_needed

BLOCK = 32
"""Destinations per block (measured on a 2-core CPU at pos 128-1024: 16 to 32 fastest)."""


def hidden_positions(
    n_dest: int,
    n_src: int,
    *,
    causal: bool,
    attention_mask: Bool[Tensor, "batch src"] | None,
    device: torch.device,
) -> Bool[Tensor, "*shape"] | None:
    """Which (dest, src) pairs may not attend, broadcastable to ``[batch, head, dest, src]``;
    ``None`` when every pair may.

    The destinations are the last ``n_dest`` of the ``n_src`` positions. Computed per call
    (``n_dest x n_src`` booleans), so no layer keeps an ``n_ctx x n_ctx`` buffer.
    """
    hidden: Tensor | None = None
    if causal:
        hidden = torch.ones(n_dest, n_src, dtype=torch.bool, device=device).triu(
            diagonal=n_src - n_dest + 1
        )
    if attention_mask is not None:
        padding = ~attention_mask[:, None, None, :]
        hidden = padding if hidden is None else hidden | padding
    return hidden


def attention_pattern(
    q: Float[Tensor, "batch head dest d_head"],
    k: Float[Tensor, "batch head src d_head"],
    *,
    causal: bool,
    attention_mask: Bool[Tensor, "batch src"] | None = None,
) -> Float[Tensor, "batch head dest src"]:
    """``A = softmax(q k^T + mask)`` per head, with ``-inf`` in the mask where
    :func:`hidden_positions` hides a source; a destination that sees no source at all gets
    a row of zeros (it attends to nothing), not the NaN of ``softmax`` over ``-inf``.

    ``A v`` is the formula :func:`softmax_attention` computes faster; this step-by-step
    form, differentiated by autograd, is the path taken where the pattern itself is wanted
    (a hook, attention dropout), under ``torch.func`` transforms and for second
    derivatives, and the oracle the tests compare with.
    """
    scores = q @ k.transpose(-1, -2)
    hidden = hidden_positions(
        q.shape[-2], k.shape[-2], causal=causal, attention_mask=attention_mask, device=q.device
    )
    if hidden is not None:
        scores = scores.masked_fill(hidden, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    if attention_mask is not None and hidden is not None:
        # Rows with no visible source are NaN after softmax; they attend to nothing.
        pattern = pattern.masked_fill(hidden, 0.0)
    return pattern


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
    width = stop - start
    if causal and width > 1:
        # Only the last (stop - start) sources lie after some destination of the block
        # (none for a single destination, the last source it reads being its own).
        future = torch.ones(width, width, dtype=torch.bool, device=q.device).triu(1)
        scores[:, :, end - width :].masked_fill_(future, float("-inf"))
    if padding is None:
        return torch.softmax(scores, dim=-1)
    scores.masked_fill_(padding[:, :, :end], float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num_(0.0)  # all hidden: 0/0


def _padding(keep: Tensor | None, n_heads: int) -> Tensor | None:
    """The hidden sources per ``[batch * head]`` row, ``[batch * head, 1, src]``."""
    return None if keep is None else (~keep).repeat_interleave(n_heads, 0)[:, None, :]


def _attend_blocks(
    q3: Tensor, k3: Tensor, v3: Tensor, n_heads: int, causal: bool, padding: Tensor | None
) -> Tensor:
    """``z = A v`` block by block, ``[batch, head, dest, d_head]``. Every product is a plain
    bmm over ``[batch * head, pos, d_head]``.

    With several blocks, ``z`` is laid out ``[batch, dest, head, d_head]`` in memory (a
    transposed view): the caller concatenates the heads per position, which is then a
    view, not a copy. One block is the product itself, with no copy at all.
    """
    n_dest = q3.shape[1]
    batch = q3.shape[0] // n_heads
    blocks = _blocks(n_dest, k3.shape[1], causal)
    if len(blocks) == 1:
        _, _, end = blocks[0]
        pattern = _block_pattern(q3, k3, 0, n_dest, end, causal, padding)
        return torch.bmm(pattern, v3[:, :end]).view(batch, n_heads, n_dest, -1)
    z = q3.new_empty(batch, n_dest, n_heads, v3.shape[-1])
    for start, stop, end in blocks:
        pattern = _block_pattern(q3, k3, start, stop, end, causal, padding)
        block = torch.bmm(pattern, v3[:, :end])
        z[:, start:stop] = block.view(batch, n_heads, stop - start, -1).transpose(1, 2)
    return z.transpose(1, 2)


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

    The inputs are ``[batch * head, pos, d_head]``, reshaped before the call, so that what
    is kept for backward is the function's own inputs: when the gradient is itself to be
    differentiated (``create_graph=True``: grad mode is on in ``backward``), or under a
    ``torch.func`` transform of the backward pass, backward differentiates
    :func:`softmax_attention_formula` from them instead, which autograd can differentiate
    again.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        q3: Tensor,
        k3: Tensor,
        v3: Tensor,
        n_heads: int,
        causal: bool,
        keep: Tensor | None,
    ) -> Tensor:
        padding = _padding(keep, n_heads)
        z = _attend_blocks(q3, k3, v3, n_heads, causal, padding)
        ctx.causal, ctx.keep, ctx.padding = causal, keep, padding  # type: ignore[attr-defined]
        ctx.save_for_backward(q3, k3, v3, z)
        return z

    @staticmethod
    def backward(ctx: FunctionCtx, grad_z: Tensor) -> tuple[Tensor | None, ...]:
        q3, k3, v3, z = ctx.saved_tensors  # type: ignore[attr-defined]
        causal: bool = ctx.causal  # type: ignore[attr-defined]
        padding: Tensor | None = ctx.padding  # type: ignore[attr-defined]
        batch, n_heads, n_dest, d_head = grad_z.shape
        if formula_needed(grad_z):
            keep: Tensor | None = ctx.keep  # type: ignore[attr-defined]

            def formula(q3: Tensor, k3: Tensor, v3: Tensor) -> Tensor:
                q, k, v = (t.view(batch, n_heads, *t.shape[1:]) for t in (q3, k3, v3))
                return softmax_attention_formula(q, k, v, causal, keep)

            return *torch.func.vjp(formula, q3, k3, v3)[1](grad_z), None, None, None
        row_sums = (grad_z * z).sum(dim=-1, keepdim=True)
        grad_z3 = grad_z.reshape(batch * n_heads, n_dest, d_head)
        row_sums = row_sums.reshape(batch * n_heads, n_dest, 1)
        grad_q = torch.empty_like(q3)
        grad_k: Tensor | None = None
        grad_v: Tensor | None = None
        # Last block first: it reads every source, so its products are grad_k and grad_v
        # whole (no zero fill), and each earlier block adds to their leading rows.
        for start, stop, end in reversed(_blocks(n_dest, k3.shape[1], causal)):
            pattern = _block_pattern(q3, k3, start, stop, end, causal, padding)
            grad_block = grad_z3[:, start:stop]
            block_v = torch.bmm(pattern.transpose(1, 2), grad_block)
            grad_scores = torch.bmm(grad_block, v3[:, :end].transpose(1, 2))
            grad_scores.sub_(row_sums[:, start:stop]).mul_(pattern)
            grad_q[:, start:stop] = torch.bmm(grad_scores, k3[:, :end])
            block_k = torch.bmm(grad_scores.transpose(1, 2), q3[:, start:stop])
            if grad_k is None or grad_v is None:
                grad_k, grad_v = block_k, block_v
            else:
                grad_k[:, :end] += block_k
                grad_v[:, :end] += block_v
        return grad_q, grad_k, grad_v, None, None, None


def softmax_attention_formula(
    q: Float[Tensor, "batch head dest d_head"],
    k: Float[Tensor, "batch head src d_head"],
    v: Float[Tensor, "batch head src d_head"],
    causal: bool,
    attention_mask: Bool[Tensor, "batch src"] | None = None,
) -> Float[Tensor, "batch head dest d_head"]:
    """``attention_pattern(q, k) @ v`` as written and differentiated by autograd: the
    definition :func:`softmax_attention` computes faster, the path it takes under
    ``torch.func`` transforms and for second derivatives, and the oracle its tests compare
    with."""
    return attention_pattern(q, k, causal=causal, attention_mask=attention_mask) @ v


def softmax_attention(
    q: Float[Tensor, "batch head dest d_head"],
    k: Float[Tensor, "batch head src d_head"],
    v: Float[Tensor, "batch head src d_head"],
    *,
    causal: bool,
    attention_mask: Bool[Tensor, "batch src"] | None = None,
) -> Float[Tensor, "batch head dest d_head"]:
    """``attention_pattern(q, k) @ v``, i.e. ``softmax(q k^T + mask) v`` per head; ``q`` must
    already carry the ``1/sqrt(d_head)``.

    The destinations are the last ``dest`` of the ``src`` positions. ``causal`` hides the
    sources after each destination, ``attention_mask`` (``True`` = may be attended to)
    hides sources such as padding; a destination that sees no source gets zeros. Computed
    in blocks with a written-out backward (``_SoftmaxAttention``), which never keeps the
    pattern; :func:`tfs_core.fast_op.fast_op` says which of
    :func:`softmax_attention_formula` and the faster forms runs when.
    """
    args = (q, k, v, causal, attention_mask)
    return fast_op(softmax_attention_formula, _in_blocks, _in_blocks_with_backward, *args)


def _as_rows(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``[batch, head, pos, d_head]`` tensors as ``[batch * head, pos, d_head]``."""
    return tuple(t.reshape(-1, t.shape[2], t.shape[3]) for t in tensors)


def _in_blocks(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, attention_mask: Tensor | None
) -> Tensor:
    """``_SoftmaxAttention``'s forward computation alone, for where autograd records
    nothing."""
    q3, k3, v3 = _as_rows(q, k, v)
    return _attend_blocks(q3, k3, v3, q.shape[1], causal, _padding(attention_mask, q.shape[1]))


def _in_blocks_with_backward(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, attention_mask: Tensor | None
) -> Tensor:
    """``_SoftmaxAttention`` on the ``[batch * head, pos, d_head]`` views of ``q, k, v``."""
    z: Tensor = _SoftmaxAttention.apply(*_as_rows(q, k, v), q.shape[1], causal, attention_mask)  # type: ignore[no-untyped-call]
    return z
