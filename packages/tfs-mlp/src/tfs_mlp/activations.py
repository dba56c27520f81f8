"""Activation functions written from their formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from tfs_core.fast_op import fast_op, formula_needed


def gelu_formula(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """GELU's tanh form as written, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``,
    differentiated by autograd: the definition :func:`gelu` computes faster, the path it
    takes under ``torch.func`` transforms and for second derivatives, and the oracle its
    tests compare with."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# 0.5 (1 + tanh(u)) = sigmoid(2u), so GELU's tanh form is x * sigmoid(x (A + B x^2)) with
# 2u = x (A + B x^2): A = 2 sqrt(2/pi), B = 0.044715 A. Sigmoid is several times faster than
# tanh on CPU, and the product needs fewer passes over the tensor.
_A = 2.0 * math.sqrt(2.0 / math.pi)
_B = 0.044715 * _A


def _gate(x: Tensor, a: Tensor, out: Tensor | None = None) -> Tensor:
    """``z = x (A + B x^2)`` in two passes: ``A + B x^2`` is one ``addcmul`` onto ``a``, a
    0-dim tensor holding ``A`` (``addcmul`` takes no scalar for its input)."""
    return torch.addcmul(a, x, x, value=_B, out=out).mul_(x)


def _gelu_forward(x: Tensor) -> Tensor:
    """``x sigmoid(x (A + B x^2))``, chunk by chunk into one new tensor (a tensor of one
    chunk directly): four passes over each chunk."""
    a = x.new_full((), _A)
    if x.device.type != "cpu" or x.numel() <= _CPU_CHUNK:
        return _gate(x, a).sigmoid_().mul_(x)
    y = x.new_empty(x.shape)  # contiguous, so its chunks are views
    for xs, out in zip(_chunks(x), _chunks(y), strict=True):
        _gate(xs, a, out=out).sigmoid_().mul_(xs)
    return y


class _Gelu(torch.autograd.Function):
    """GELU with its derivative written out, so that backward needs only ``x``:

    ``y = x s`` with ``s = sigmoid(z)``, ``z = x (A + B x^2)``, and
    ``dy/dx = s + x s (1 - s) (A + 3 B x^2) = s + 3 w s (1 - s)`` with
    ``w = x (A / 3 + B x^2) = z - (2 A / 3) x``: eight passes over each chunk, one
    temporary.

    When the gradient is itself to be differentiated (``create_graph=True``, so grad mode
    is on in ``backward``), or under a ``torch.func`` transform of the backward pass,
    backward differentiates :func:`gelu_formula` instead, which autograd can differentiate
    again.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return _gelu_forward(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        x: Tensor = ctx.saved_tensors[0]  # type: ignore[attr-defined]
        if formula_needed(grad):
            grad_x: Tensor = torch.func.vjp(gelu_formula, x)[1](grad)[0]
            return grad_x
        grad_x = x.new_empty(x.shape)  # contiguous, so its chunks are views
        a = x.new_full((), _A)
        for xs, gs, out in zip(*(_chunks(t) for t in (x, grad, grad_x)), strict=True):
            z = _gate(xs, a)
            torch.sigmoid(z, out=out)  # s
            w = z.sub_(xs, alpha=2.0 * _A / 3.0)  # w = z - (2 A / 3) x
            w.mul_(out).addcmul_(w, out, value=-1.0)  # w s (1 - s)
            out.add_(w, alpha=3.0).mul_(gs)
        return grad_x


_CPU_CHUNK = 1 << 19
"""Elements per chunk on a CPU (2 MiB in float32): the several passes over a chunk stay in
cache, and a temporary that size is reused by the allocator; in backward, temporaries the
size of the whole activation were measured 4x slower here, most of it page faults on
fresh memory. Other devices take the tensor whole."""


def _chunks(t: Tensor) -> tuple[Tensor, ...]:
    """``t`` as consecutive pieces of about :data:`_CPU_CHUNK` elements (views)."""
    flat = t.reshape(-1)
    if t.device.type != "cpu":
        return (flat,)
    return tuple(flat[i : i + _CPU_CHUNK] for i in range(0, flat.numel(), _CPU_CHUNK))


def gelu(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """GELU, tanh approximation: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Hendrycks and Gimpel (2016), "Gaussian Error Linear Units", section 2; this is the
    form GPT-2 uses (transformers calls it "gelu_new"). Computed as the equal
    ``x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3))`` with a written-out derivative, which
    keeps only ``x`` for the backward pass (see ``_Gelu``); :func:`tfs_core.fast_op.fast_op`
    says which of :func:`gelu_formula` and the faster forms runs when.
    """
    return fast_op(gelu_formula, _gelu_forward, _Gelu.apply, x)


def relu(x: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """ReLU: ``max(x, 0)`` (Nair and Hinton 2010), the activation of "Attention Is All You Need".

    The derivative at ``x = 0`` is taken as 0, as ``torch.nn.functional.relu`` does (``clamp``
    would pass a gradient of 1 there); NaN passes through.
    """
    return torch.where(x <= 0, 0.0, x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"gelu": gelu, "relu": relu}
