"""Exercise: the learned positional embedding. Write ``forward``, then check it with

tfs check pos-embed {file}:LearnedPositionalEmbedding
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


class LearnedPositionalEmbedding(nn.Module):
    """``pos_embed[b, p] = W_pos[offset + p]``: a learned vector per position (GPT-2).

    ``offset`` is the number of positions before ``tokens`` (for example those already in
    a KV cache), so the first token given is at position ``offset``. The output does not
    depend on the token ids, only on their positions; ``tokens`` gives the shape.

    Shapes: tokens ``[batch, pos]`` -> ``[batch, pos, d_model]``; ``offset + pos <= n_ctx``.
    """

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        self.W_pos = nn.Parameter(torch.randn(n_ctx, d_model) * 0.02)

    def forward(
        self, tokens: Int[Tensor, "batch pos"], offset: int = 0
    ) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
