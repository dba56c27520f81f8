"""Mistakes learners make in the MLP, each written as tfs's formula with one step wrong.

:func:`~tfs_mlp.checks.check_mlp` computes every one of them under tfs's weights and names
the one a learner's class computes. They are the slips of writing GPT-2's MLP from the
papers: which GELU (Hendrycks and Gimpel give the exact one, its tanh form and a sigmoid
one), the constants of the tanh form, where the activation goes, and the biases.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from tfs_core.checking import Formula

Hidden = Float[Tensor, "batch pos d_mlp"]
Stream = Float[Tensor, "batch pos d_model"]


class MLP(Formula):
    """tfs's MLP step by step: ``pre = x W_in + b_in``; ``post = GELU(pre)`` with GPT-2's
    ``GELU(h) = 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))``; ``out = post W_out +
    b_out``."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.write(self.gelu(self.read(x)))

    def read(self, x: Stream) -> Hidden:
        return x @ self.w["W_in"] + self.w["b_in"]

    def inner(self, h: Tensor) -> Tensor:
        return math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)

    def gelu(self, h: Tensor) -> Tensor:
        return 0.5 * h * (1 + torch.tanh(self.inner(h)))

    def write(self, post: Hidden) -> Stream:
        return post @ self.w["W_out"] + self.w["b_out"]


class ActivationAfterOutput(MLP):
    says = "GELU is applied after W_out, to the output, instead of between the two products"
    fix = "out = GELU(x W_in + b_in) W_out + b_out: the activation acts on the d_mlp hidden units"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.gelu(self.write(self.read(x)))


class ActivationOnInput(MLP):
    says = "GELU is applied to the input, before W_in, instead of between the two products"
    fix = "out = GELU(x W_in + b_in) W_out + b_out: the activation acts on x W_in + b_in"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.write(self.read(self.gelu(x)))


class ResidualInside(MLP):
    says = "the input is added to the MLP's output (x + MLP(x)): the residual is added twice"
    fix = "return GELU(x W_in + b_in) W_out + b_out alone; the block adds it to the residual stream"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return x + super().__call__(x)


class Relu(MLP):
    says = "the activation is ReLU, max(0, h), not GELU"
    fix = "GPT-2 uses GELU's tanh form, 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def gelu(self, h: Tensor) -> Tensor:
        return h.clamp(min=0)


class ExactGelu(MLP):
    says = "the activation is the exact GELU, 0.5 h (1 + erf(h / sqrt(2))), not GPT-2's tanh form"
    fix = "use 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))), F.gelu(h, approximate='tanh')"

    def gelu(self, h: Tensor) -> Tensor:
        return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))


class SigmoidGelu(MLP):
    says = "the activation is the sigmoid approximation h sigmoid(1.702 h), not GPT-2's tanh form"
    fix = "GPT-2 uses 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def gelu(self, h: Tensor) -> Tensor:
        return h * torch.sigmoid(1.702 * h)


class NoCubicTerm(MLP):
    says = "GELU's 0.044715 h^3 term is missing: tanh(sqrt(2/pi) h)"
    fix = "0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def inner(self, h: Tensor) -> Tensor:
        return math.sqrt(2 / math.pi) * h


class SquareNotCube(MLP):
    says = "GELU's cubic term is 0.044715 h^2, a square"
    fix = "the term is cubed: 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def inner(self, h: Tensor) -> Tensor:
        return math.sqrt(2 / math.pi) * (h + 0.044715 * h**2)


class NoSqrtTwoOverPi(MLP):
    says = "GELU's factor sqrt(2/pi) is missing: tanh(h + 0.044715 h^3)"
    fix = "0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def inner(self, h: Tensor) -> Tensor:
        return h + 0.044715 * h**3


class SqrtPiOverTwo(MLP):
    says = "GELU's factor is sqrt(pi/2), upside down"
    fix = "it is sqrt(2/pi), about 0.798: 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def inner(self, h: Tensor) -> Tensor:
        return math.sqrt(math.pi / 2) * (h + 0.044715 * h**3)


class FactorOnHOnly(MLP):
    says = "sqrt(2/pi) multiplies h only, not the cubic term: tanh(sqrt(2/pi) h + 0.044715 h^3)"
    fix = "it multiplies the sum: tanh(sqrt(2/pi) (h + 0.044715 h^3))"

    def inner(self, h: Tensor) -> Tensor:
        return math.sqrt(2 / math.pi) * h + 0.044715 * h**3


class NoHalf(MLP):
    says = "GELU's factor 0.5 is missing: h (1 + tanh(...)) is twice GELU"
    fix = "0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))"

    def gelu(self, h: Tensor) -> Tensor:
        return 2 * super().gelu(h)


class NoInputBias(MLP):
    says = "b_in is never added"
    fix = "pre = x W_in + b_in, before the activation"

    def read(self, x: Stream) -> Hidden:
        return x @ self.w["W_in"]


class InputBiasAfterActivation(MLP):
    says = "b_in is added after the activation: GELU(x W_in) + b_in"
    fix = "add it before: GELU(x W_in + b_in)"

    def read(self, x: Stream) -> Hidden:
        return x @ self.w["W_in"]

    def gelu(self, h: Tensor) -> Tensor:
        return super().gelu(h) + self.w["b_in"]


class NoOutputBias(MLP):
    says = "b_out is never added"
    fix = "out = GELU(x W_in + b_in) W_out + b_out"

    def write(self, post: Hidden) -> Stream:
        return post @ self.w["W_out"]


MISTAKES: list[type[MLP]] = [
    ActivationAfterOutput,
    ActivationOnInput,
    ResidualInside,
    Relu,
    ExactGelu,
    SigmoidGelu,
    NoCubicTerm,
    SquareNotCube,
    NoSqrtTwoOverPi,
    SqrtPiOverTwo,
    FactorOnHOnly,
    NoHalf,
    NoInputBias,
    InputBiasAfterActivation,
    NoOutputBias,
]
