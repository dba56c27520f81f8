"""Mistakes learners make in the unembedding, each written as tfs's formula with one step
wrong: :func:`~tfs_embeddings.checks.check_unembed` names the one a learner's class computes.
Most of them change the logits into something else: probabilities, shifted or scaled logits,
or logits of a normalised residual stream.
"""

from __future__ import annotations

import math

from jaxtyping import Float
from torch import Tensor

from tfs_core.checking import Formula

Logits = Float[Tensor, "batch pos d_vocab"]


class Unembed(Formula):
    """tfs's unembedding: ``logits = x W_U + b_U``, unnormalised."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.logits(self.read(x))

    def read(self, x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        return x

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        return x @ self.w["W_U"] + self.w["b_U"]


class Softmax(Unembed):
    says = "the logits go through a softmax: it returns probabilities"
    fix = "return the logits x W_U + b_U; cross-entropy and sampling apply the softmax"

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        return super().logits(x).softmax(dim=-1)


class LogSoftmax(Unembed):
    says = "the logits go through a log-softmax: it returns log-probabilities"
    fix = "return the logits x W_U + b_U; cross-entropy applies the log-softmax itself"

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        return super().logits(x).log_softmax(dim=-1)


class MaxSubtracted(Unembed):
    says = "each position's largest logit is subtracted, a softmax's stabilising step"
    fix = "return the logits x W_U + b_U unshifted; a softmax that needs the shift does it"

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        logits = super().logits(x)
        return logits - logits.amax(dim=-1, keepdim=True)


class NoBias(Unembed):
    says = "b_U is never added"
    fix = "logits = x W_U + b_U"

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        return x @ self.w["W_U"]


class DividedBySqrtDModel(Unembed):
    says = "the logits are divided by sqrt(d_model), like attention scores"
    fix = "logits = x W_U + b_U, unscaled; a temperature belongs to sampling"

    def logits(self, x: Float[Tensor, "batch pos d_model"]) -> Logits:
        return super().logits(x) / math.sqrt(x.shape[-1])


class NormalisedInside(Unembed):
    says = "the residual stream is normalised (x - mean) / std inside the unembedding"
    fix = "Unembed reads x as given: x W_U + b_U; the final LayerNorm is its own module, before"

    def read(self, x: Float[Tensor, "batch pos d_model"]) -> Tensor:
        centred = x - x.mean(dim=-1, keepdim=True)
        return centred / (centred.square().mean(dim=-1, keepdim=True) + 1e-5).sqrt()


MISTAKES: list[type[Unembed]] = [
    Softmax,
    LogSoftmax,
    MaxSubtracted,
    NoBias,
    DividedBySqrtDModel,
    NormalisedInside,
]
