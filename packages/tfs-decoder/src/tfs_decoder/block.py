"""The residual block: attention then MLP, each reading from and adding to the residual stream."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from tfs_attention import KVCache
from tfs_core.hook_point import HookPoint
from tfs_decoder.layernorm import LayerNorm


class ResidualBlock(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2; Radford et al. 2019, section 2.3)::

        resid_mid  = resid_pre + attn(ln1(resid_pre))
        resid_post = resid_mid + mlp(ln2(resid_mid))

    The block takes its attention and MLP as modules, so either can be swapped for any
    module mapping ``[batch, pos, d_model]`` to the same shape (composition, not flags).
    ``kv_cache`` is passed on to the attention as ``attn(x, kv_cache=kv_cache)`` when given
    (see ``tfs_attention.KVCache``); without one the attention is called as ``attn(x)``.

    Hook points (identity modules for ordinary forward hooks): ``hook_resid_pre``,
    ``hook_attn_out``, ``hook_resid_mid``, ``hook_mlp_out`` and ``hook_resid_post``, all
    ``[batch, pos, d_model]``.

    Args:
        d_model: width of the residual stream.
        attn: the attention sublayer, e.g. ``tfs_attention.MultiHeadAttention``.
        mlp: the MLP sublayer, e.g. ``tfs_mlp.MLP``.
        eps: LayerNorm epsilon.
        dropout: probability of dropping entries of each sublayer's output in training.

    Shapes:
        resid_pre ``[batch, pos, d_model]`` -> resid_post ``[batch, pos, d_model]``.
    """

    def __init__(
        self,
        d_model: int,
        attn: nn.Module,
        mlp: nn.Module,
        *,
        eps: float = 1e-5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.ln1 = LayerNorm(d_model, eps=eps)
        self.attn = attn
        self.ln2 = LayerNorm(d_model, eps=eps)
        self.mlp = mlp
        self.dropout = dropout
        # Hook points on the residual stream and on what each sublayer writes to it.
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(
        self,
        resid_pre: Float[Tensor, "batch pos d_model"],
        *,
        kv_cache: KVCache | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        normalized = self.ln1(resid_pre)
        # Only a cache is passed on, so any attention module works without one.
        attn_out: Tensor = self.hook_attn_out(
            self.attn(normalized) if kv_cache is None else self.attn(normalized, kv_cache=kv_cache)
        )
        resid_mid = self.hook_resid_mid(resid_pre + self._dropout(attn_out))
        mlp_out: Tensor = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        resid_post: Tensor = self.hook_resid_post(resid_mid + self._dropout(mlp_out))
        return resid_post

    def _dropout(self, x: Tensor) -> Tensor:
        """Dropout of a sublayer's output in training; ``x`` itself otherwise."""
        return F.dropout(x, self.dropout) if self.training and self.dropout > 0 else x
