"""LayerNorm: normalises each position of the residual stream before a sublayer reads it."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * w + b`` over ``d_model``, per position.

    Ba, Kiros and Hinton (2016), "Layer Normalization", equation 4, with the biased
    variance (mean of squared deviations), as ``torch.nn.LayerNorm`` and GPT-2 use.

    ``hook_normalized`` is a hook point (identity module) on the output ``y``.

    Args:
        d_model: width of the residual stream.
        eps: added to the variance before the square root.

    Shapes:
        x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        if not eps > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.d_model = d_model
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_normalized = nn.Identity()  # the output, [..., d_model]

    def reset_parameters(self) -> None:
        nn.init.ones_(self.w)
        nn.init.zeros_(self.b)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected last dimension d_model={self.d_model}, got {tuple(x.shape)}"
            )
        centred = x - x.mean(dim=-1, keepdim=True)
        variance = centred.pow(2).mean(dim=-1, keepdim=True)
        normalized: Tensor = self.hook_normalized(
            centred * torch.rsqrt(variance + self.eps) * self.w + self.b
        )
        return normalized

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"
