"""Exercise: the token embedding. Write ``forward``, then check it with

tfs check embed {file}:Embed
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn


class Embed(nn.Module):
    """``embed[b, p] = W_E[tokens[b, p]]``: each token id picks its row of ``W_E``.

    Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits": the
    embedding writes the token into the residual stream.

    Shapes: tokens ``[batch, pos]`` (integer ids in ``[0, d_vocab)``) ->
    ``[batch, pos, d_model]``.
    """

    def __init__(self, d_vocab: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model) * 0.02)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
