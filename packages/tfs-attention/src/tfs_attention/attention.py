"""Multi-head self-attention: moves information between positions of the residual stream."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor, nn

from tfs_attention.kv_cache import KVCache
from tfs_attention.qkv_projection import qkv_projection, side_by_side
from tfs_attention.softmax_attention import attention_pattern, hidden_positions, softmax_attention
from tfs_core.fast_op import fast_op
from tfs_core.hook_point import HookPoint
from tfs_core.validation import require_positive_ints

BACKENDS = ("manual", "sdpa")


class MultiHeadAttention(nn.Module):
    r"""Multi-head self-attention with per-head weights, written from matrix products and softmax.

    For each head ``h``, with ``x`` the residual stream (Vaswani et al. 2017, "Attention Is
    All You Need", 3.2.1-3.2.2; Elhage et al. 2021, "A Mathematical Framework for
    Transformer Circuits", "Attention Heads are Independent and Additive")::

        q_h = x W_Q[h] + b_Q[h]    k_h = x W_K[h] + b_K[h]    v_h = x W_V[h] + b_V[h]
        A_h = softmax(q_h k_h^T / sqrt(d_head) + mask)         # [dest, src]
        out = sum_h (A_h v_h) W_O[h] + b_O

    With ``causal=True`` a destination position attends only to source positions at or
    before it. ``attention_mask`` (``True`` = may be attended to, as in transformers)
    further hides source positions such as padding; a destination whose every source is
    hidden gets a zero pattern row and so writes only ``b_O``, never NaN.

    With a :class:`~tfs_attention.KVCache`, ``x`` holds only the new positions: their keys
    and values are appended to the cache and they attend to every cached source position
    (the destinations are the last ``pos`` of the ``src`` positions). ``attention_mask``
    then covers all ``src = cached + pos`` source positions.

    Hook points (identity modules; attach ordinary ``register_forward_hook`` hooks to read
    or replace an activation): ``hook_q``, ``hook_k``, ``hook_v`` and ``hook_z``
    ``[batch, pos, head, d_head]`` (``z_h = A_h v_h``; ``hook_k`` and ``hook_v`` see the new
    positions before they are cached) and ``hook_pattern`` ``[batch, head, dest, src]``
    (after masking, before dropout).

    Args:
        d_model: width of the residual stream.
        n_heads: number of heads.
        d_head: width of one head; defaults to ``d_model // n_heads``.
        causal: hide future source positions.
        dropout: probability of dropping attention-pattern entries in training.
        init_std: standard deviation of the normal initialisation of the weights
            (GPT-2 uses 0.02); biases start at zero.
        backend: ``"manual"`` (the default) computes the pattern as written above.
            ``"sdpa"`` hands the softmax and the weighted sum to
            ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, tested
            equal); it never forms the pattern, so while a hook is attached to
            ``hook_pattern`` the manual path runs instead. torch differentiates some of
            those kernels only once (second derivatives raise); the manual path supports
            second derivatives and ``torch.func`` transforms.

    Shapes:
        x ``[batch, pos, d_model]``, attention_mask ``[batch, src]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_head: int | None = None,
        causal: bool = True,
        *,
        dropout: float = 0.0,
        init_std: float = 0.02,
        backend: str = "manual",
    ) -> None:
        super().__init__()
        require_positive_ints(d_model=d_model, n_heads=n_heads)
        if d_head is None:
            if d_model % n_heads != 0:
                raise ValueError(
                    f"n_heads: expected a divisor of d_model={d_model} when d_head is not "
                    f"given, got {n_heads}"
                )
            d_head = d_model // n_heads
        if isinstance(d_head, bool) or not isinstance(d_head, int) or d_head <= 0:
            raise ValueError(f"d_head: expected a positive int or None, got {d_head!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_head = d_head
        self.causal = causal
        self.dropout = dropout
        self.init_std = init_std
        self.backend = backend
        self.W_Q = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(n_heads, d_model, d_head))
        self.W_O = nn.Parameter(torch.empty(n_heads, d_head, d_model))
        self.b_Q = nn.Parameter(torch.empty(n_heads, d_head))
        self.b_K = nn.Parameter(torch.empty(n_heads, d_head))
        self.b_V = nn.Parameter(torch.empty(n_heads, d_head))
        self.b_O = nn.Parameter(torch.empty(d_model))
        # Hook points: identity modules, so ordinary forward hooks read or replace these
        # activations; with no hook attached each returns its input at once.
        self.hook_q = HookPoint()  # [batch, pos, head, d_head]
        self.hook_k = HookPoint()  # [batch, pos, head, d_head], new positions only
        self.hook_v = HookPoint()  # [batch, pos, head, d_head], new positions only
        self.hook_pattern = HookPoint()  # [batch, head, dest, src]
        self.hook_z = HookPoint()  # [batch, pos, head, d_head]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight in (self.W_Q, self.W_K, self.W_V, self.W_O):
            nn.init.normal_(weight, mean=0.0, std=self.init_std)
        for bias in (self.b_Q, self.b_K, self.b_V, self.b_O):
            nn.init.zeros_(bias)

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        attention_mask: Bool[Tensor, "batch src"] | None = None,
        *,
        kv_cache: KVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        self._validate_inputs(x, attention_mask, kv_cache)
        batch, pos, _ = x.shape
        # q_h, k_h, v_h = x W_Q[h] + b_Q[h], ... for every head, as one product.
        qkv = self._project(x.reshape(batch * pos, self.d_model), kv_cache)
        q, k, v = qkv.view(batch, pos, 3, self.n_heads, self.d_head).unbind(2)
        # The hooks see [batch, pos, head, d_head]; the products below want head before pos.
        q = self.hook_q(q).transpose(1, 2)
        k = self.hook_k(k).transpose(1, 2)
        v = self.hook_v(v).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)
        if self.backend == "sdpa" and not _has_hooks(self.hook_pattern):
            z = self._attend_sdpa(q, k, v, attention_mask)
        else:
            z = self._attend(q, k, v, attention_mask)
        z = self.hook_z(z.transpose(1, 2))  # [batch, pos, head, d_head]
        # out = sum_h z_h W_O[h] + b_O, as one product over the concatenated heads.
        out = torch.addmm(self.b_O, z.reshape(batch * pos, -1), self.W_O.reshape(-1, self.d_model))
        return out.view(batch, pos, self.d_model)

    def _validate_inputs(
        self, x: Tensor, attention_mask: Tensor | None, kv_cache: KVCache | None
    ) -> None:
        """Raise ``ValueError`` naming ``x`` or ``attention_mask`` if its shape or dtype
        does not fit this layer."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected shape [batch, pos, d_model={self.d_model}], got {tuple(x.shape)}"
            )
        batch, pos, _ = x.shape
        if batch == 0 or pos == 0:
            raise ValueError(
                f"x: expected at least one sequence and one position, got {tuple(x.shape)}"
            )
        n_src = pos + (kv_cache.length if kv_cache is not None else 0)
        if attention_mask is not None and (
            attention_mask.dtype != torch.bool or attention_mask.shape != (batch, n_src)
        ):
            raise ValueError(
                f"attention_mask: expected a bool tensor of shape {(batch, n_src)} "
                f"[batch, src], got {attention_mask.dtype} {tuple(attention_mask.shape)}"
            )

    def _project(self, rows: Tensor, kv_cache: KVCache | None) -> Tensor:
        """:func:`qkv_projection` of ``rows``. In cached generation (a cache, and nothing
        for autograd to record: :func:`tfs_core.fast_op.fast_op`) the same one product,
        with the weights laid side by side once per sequence and kept with the cache
        (:meth:`KVCache.keep`) instead of once per step."""
        weights = (self.W_Q, self.W_K, self.W_V, self.b_Q, self.b_K, self.b_V)
        if kv_cache is None:
            return qkv_projection(rows, *weights)
        cache = kv_cache

        def kept(rows: Tensor, *weights: Tensor) -> Tensor:
            weight, bias = cache.keep("qkv", weights, lambda: side_by_side(*weights))
            return torch.addmm(bias, rows, weight)

        # qkv_projection is plain tensor operations: autograd and torch.func differentiate it.
        return fast_op(qkv_projection, kept, qkv_projection, rows, *weights)

    def _attend(
        self,
        q: Float[Tensor, "batch head dest d_head"],
        k: Float[Tensor, "batch head src d_head"],
        v: Float[Tensor, "batch head src d_head"],
        attention_mask: Tensor | None,
    ) -> Float[Tensor, "batch head dest d_head"]:
        """``z_h = softmax(q_h k_h^T / sqrt(d_head) + mask) v_h``.

        Step by step (:func:`attention_pattern`, then ``@ v``) while the pattern itself is
        needed (a hook on ``hook_pattern``, or attention dropout in training); otherwise by
        :func:`softmax_attention`, which computes the same with a written-out backward pass.
        """
        q = q * (1.0 / math.sqrt(self.d_head))
        dropping = self.training and self.dropout > 0
        if not dropping and not _has_hooks(self.hook_pattern):
            return softmax_attention(q, k, v, causal=self.causal, attention_mask=attention_mask)
        pattern = attention_pattern(q, k, causal=self.causal, attention_mask=attention_mask)
        pattern = F.dropout(self.hook_pattern(pattern), p=self.dropout, training=self.training)
        return pattern @ v

    def _attend_sdpa(
        self,
        q: Float[Tensor, "batch head dest d_head"],
        k: Float[Tensor, "batch head src d_head"],
        v: Float[Tensor, "batch head src d_head"],
        attention_mask: Tensor | None,
    ) -> Float[Tensor, "batch head dest d_head"]:
        """The same as :meth:`_attend`, by ``F.scaled_dot_product_attention`` (opt-in)."""
        n_dest, n_src = q.shape[-2], k.shape[-2]
        dropout = self.dropout if self.training else 0.0
        if attention_mask is None and (not self.causal or n_dest == n_src):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=self.causal)
        hidden = hidden_positions(
            n_dest, n_src, causal=self.causal, attention_mask=attention_mask, device=q.device
        )
        assert hidden is not None
        # A destination with no visible source attends to nothing, as in _attend. SDPA is
        # shown such a row unmasked and its output zeroed after: torch before 2.5 returns
        # NaN for a fully masked row, and its gradient would carry the NaN back.
        nothing_visible = hidden.all(dim=-1, keepdim=True)
        visible = ~(hidden & ~nothing_visible)
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, dropout_p=dropout)
        return z.masked_fill(nothing_visible, 0.0)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, d_head={self.d_head}, "
            f"causal={self.causal}, backend={self.backend!r}"
        )


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)
