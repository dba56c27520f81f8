"""Exercise: the unembedding. Write ``forward``, then check it with

tfs check unembed {file}:Unembed
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn


class Unembed(nn.Module):
    """``logits = residual W_U + b_U``: reads the residual stream out as one score per
    token id (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

    Shapes: residual ``[batch, pos, d_model]`` -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self, d_model: int, d_vocab: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) * 0.02)
        self.b_U = nn.Parameter(torch.zeros(d_vocab))

    def forward(
        self, residual: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_vocab"]:
        raise NotImplementedError
