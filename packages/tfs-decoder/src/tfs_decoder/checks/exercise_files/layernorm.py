"""Exercise: LayerNorm. Write ``forward``, then check it with

tfs check layernorm {file}:LayerNorm
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * w + b``, over ``d_model`` at each position.

    Ba, Kiros and Hinton (2016), "Layer Normalization", equation 4. The variance is the
    biased one (the mean of squared deviations), as GPT-2 and ``torch.nn.LayerNorm`` use.

    Shapes: x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
