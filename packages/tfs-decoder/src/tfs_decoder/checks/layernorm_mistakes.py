"""Mistakes learners make in LayerNorm, each written as tfs's formula with one step wrong:
:func:`~tfs_decoder.checks.check_layernorm` names the one a learner's class computes."""

from __future__ import annotations

import torch
from torch import Tensor

from tfs_core.checking import Formula

EPS = 1e-5


class LayerNorm(Formula):
    """``(x - mean(x)) / sqrt(var(x) + eps) * w + b`` over ``d_model``, ``var`` the mean of
    squared deviations (Ba et al., 2016, "Layer Normalization", eq. 4)."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.scale(self.centre(x) / self.spread(x))

    def centre(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=-1, keepdim=True)

    def variance(self, x: Tensor) -> Tensor:
        return self.centre(x).square().mean(dim=-1, keepdim=True)

    def spread(self, x: Tensor) -> Tensor:
        return torch.sqrt(self.variance(x) + EPS)

    def scale(self, normalised: Tensor) -> Tensor:
        return normalised * self.w["w"] + self.w["b"]


class UnbiasedVariance(LayerNorm):
    says = "the variance is the unbiased estimate (divided by d_model - 1)"
    fix = "use the mean of squared deviations: x.var(dim=-1, unbiased=False, keepdim=True)"

    def variance(self, x: Tensor) -> Tensor:
        return x.var(dim=-1, keepdim=True)


class EpsOutsideTheRoot(LayerNorm):
    says = "eps is added after the square root: sqrt(var) + eps"
    fix = "add it inside: sqrt(var + eps)"

    def spread(self, x: Tensor) -> Tensor:
        return self.variance(x).sqrt() + EPS


class NoEps(LayerNorm):
    says = "eps is left out"
    fix = "divide by sqrt(var + eps), which stays finite for a constant row"

    def spread(self, x: Tensor) -> Tensor:
        return self.variance(x).sqrt()


class NoSquareRoot(LayerNorm):
    says = "x - mean is divided by the variance, not the standard deviation"
    fix = "divide by sqrt(var + eps)"

    def spread(self, x: Tensor) -> Tensor:
        return self.variance(x) + EPS


class MeanNotSubtracted(LayerNorm):
    says = "the mean is not subtracted from x (only used for the variance)"
    fix = "(x - mean) / sqrt(var + eps)"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.scale(x / self.spread(x))


class VarianceNotCentred(LayerNorm):
    says = "the variance is the mean of x^2, not of (x - mean)^2"
    fix = "var = mean((x - mean)^2): the deviations from the mean, squared"

    def variance(self, x: Tensor) -> Tensor:
        return x.square().mean(dim=-1, keepdim=True)


class RootMeanSquare(LayerNorm):
    says = "x is divided by its root mean square, with no mean anywhere (that is RMSNorm)"
    fix = "centre first: (x - mean) / sqrt(mean((x - mean)^2) + eps)"

    def centre(self, x: Tensor) -> Tensor:
        return x


class OverPositions(LayerNorm):
    says = "the mean and variance are taken over positions (dim=-2), not over d_model"
    fix = "normalise each position over its own d_model values: dim=-1, keepdim=True"

    def centre(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=-2, keepdim=True)

    def variance(self, x: Tensor) -> Tensor:
        return self.centre(x).square().mean(dim=-2, keepdim=True)


class OverPositionsAndFeatures(LayerNorm):
    says = "the mean and variance are taken over positions and d_model together"
    fix = "normalise each position alone: over the last axis, dim=-1"

    def centre(self, x: Tensor) -> Tensor:
        return x - x.mean(dim=(-2, -1), keepdim=True)

    def variance(self, x: Tensor) -> Tensor:
        return self.centre(x).square().mean(dim=(-2, -1), keepdim=True)


class GainAndBiasSwapped(LayerNorm):
    says = "w and b are swapped: the output is normalised * b + w"
    fix = "normalised * w + b (w the gain, started at 1; b the bias, started at 0)"

    def scale(self, normalised: Tensor) -> Tensor:
        return normalised * self.w["b"] + self.w["w"]


class BiasBeforeGain(LayerNorm):
    says = "b is added before multiplying by w: (normalised + b) * w"
    fix = "normalised * w + b"

    def scale(self, normalised: Tensor) -> Tensor:
        return (normalised + self.w["b"]) * self.w["w"]


class GainBeforeNormalising(LayerNorm):
    says = "x is multiplied by w before it is normalised, which undoes the gain"
    fix = "normalise first, then scale and shift: (x - mean) / sqrt(var + eps) * w + b"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        scaled = x * self.w["w"]
        return self.centre(scaled) / self.spread(scaled) + self.w["b"]


class NoGain(LayerNorm):
    says = "w is never applied"
    fix = "normalised * w + b"

    def scale(self, normalised: Tensor) -> Tensor:
        return normalised + self.w["b"]


MISTAKES: list[type[LayerNorm]] = [
    UnbiasedVariance,
    EpsOutsideTheRoot,
    NoEps,
    NoSquareRoot,
    MeanNotSubtracted,
    VarianceNotCentred,
    RootMeanSquare,
    OverPositions,
    OverPositionsAndFeatures,
    GainAndBiasSwapped,
    BiasBeforeGain,
    GainBeforeNormalising,
    NoGain,
]
