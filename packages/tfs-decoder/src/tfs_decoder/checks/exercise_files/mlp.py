"""Exercise: the MLP. Write ``forward``, then check it with

tfs check mlp {file}:MLP
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn


class MLP(nn.Module):
    """``out = gelu(x W_in + b_in) W_out + b_out``, at each position independently.

    Vaswani et al. (2017), "Attention Is All You Need", 3.3 (with ReLU there). GPT-2 uses
    the tanh approximation of GELU (Hendrycks and Gimpel 2016)::

        gelu(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))

    Shapes: x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``; the hidden
    activations are ``[batch, pos, d_mlp]``.
    """

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) * 0.02)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) * 0.02)
        self.b_out = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
