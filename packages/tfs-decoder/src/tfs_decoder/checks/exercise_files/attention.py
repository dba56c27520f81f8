"""Exercise: multi-head self-attention. Write ``forward``, then check it with

tfs check attention {file}:MultiHeadAttention
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """For each head ``h``, with ``x`` the residual stream::

        q_h = x W_Q[h] + b_Q[h]    k_h = x W_K[h] + b_K[h]    v_h = x W_V[h] + b_V[h]
        A_h = softmax(q_h k_h^T / sqrt(d_head) + mask)       # [dest, src], rows sum to 1
        out = sum_h (A_h v_h) W_O[h] + b_O

    Vaswani et al. (2017), "Attention Is All You Need", 3.2.1-3.2.2; Elhage et al. (2021),
    "A Mathematical Framework for Transformer Circuits". With ``causal=True`` the mask
    hides every source position after the destination (a position sees itself).

    Shapes: x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_head: int | None = None, causal: bool = True
    ) -> None:
        super().__init__()
        d_head = d_model // n_heads if d_head is None else d_head
        self.d_head = d_head
        self.causal = causal
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) * 0.02)
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        # Pass the pattern through it (A = self.hook_pattern(A)): tfs attention-plot reads it.
        self.hook_pattern = nn.Identity()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
