"""Activation functions written from their formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Hendrycks and Gimpel (2016), "Gaussian Error Linear Units", section 2; this is the
    form GPT-2 uses (transformers calls it "gelu_new").
    """
    return 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x.pow(3))))


def relu(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """ReLU: ``max(x, 0)`` (Nair and Hinton 2010), the activation of "Attention Is All You Need".

    The derivative at ``x = 0`` is taken as 0, as ``torch.nn.functional.relu`` does (``clamp``
    would pass a gradient of 1 there); NaN passes through.
    """
    return torch.where(x <= 0, 0.0, x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"gelu": gelu, "relu": relu}
