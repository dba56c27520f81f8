"""LayerNorm: normalises each position of the residual stream before a sublayer reads it."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

# tfs-decoder depends on tfs-attention, released in lockstep: one copy serves both.
from tfs_core.fast_op import fast_op, formula_needed
from tfs_core.hook_point import HookPoint
from tfs_core.validation import require_positive_ints


def layer_norm_formula(
    x: Float[Tensor, "*rows d_model"],
    w: Float[Tensor, " d_model"],
    b: Float[Tensor, " d_model"],
    eps: float,
) -> Float[Tensor, "*rows d_model"]:
    """``(x - mean(x)) / sqrt(var(x) + eps) * w + b`` over the last axis, as written and
    differentiated by autograd: the definition :func:`layer_norm` computes faster, the path
    it takes under ``torch.func`` transforms and for second derivatives, and the oracle its
    tests compare with."""
    centred = x - x.mean(dim=-1, keepdim=True)
    variance = centred.square().mean(dim=-1, keepdim=True)  # biased: the mean of squares
    return centred / torch.sqrt(variance + eps) * w + b


class LayerNorm(nn.Module):
    """``y = (x - mean(x)) / sqrt(var(x) + eps) * w + b`` over ``d_model``, per position
    (:func:`layer_norm_formula`, computed by :func:`layer_norm`).

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
        require_positive_ints(d_model=d_model)
        if not eps > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.d_model = d_model
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_normalized = HookPoint()  # the output, [..., d_model]

    def reset_parameters(self) -> None:
        nn.init.ones_(self.w)
        nn.init.zeros_(self.b)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected last dimension d_model={self.d_model}, got {tuple(x.shape)}"
            )
        normalized: Tensor = self.hook_normalized(layer_norm(x, self.w, self.b, self.eps))
        return normalized

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"


def _normalize(x: Tensor, w: Tensor, b: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``y``, and the per-row ``total = sum(x)`` and ``r = 1 / sqrt(n var(x) + n eps)``
    that backward needs (``n = d_model``, so ``rstd = sqrt(n) r``).

    The constant factors ride on the ops' scalar arguments, ``x - total / n`` and
    ``y = b + sqrt(n) (x - mean) r w``, so a call takes eight ops, not nine: at the few
    rows of a generation step their count, not their size, sets the time.
    """
    n = x.shape[-1]
    total = x.sum(dim=-1, keepdim=True)
    centred = torch.sub(x, total, alpha=1.0 / n)
    # n var = |x - mean|^2; the norm reads the row once and writes nothing.
    norm = torch.linalg.vector_norm(centred, dim=-1, keepdim=True)
    r = norm.square_().add_(n * eps).rsqrt_()
    return torch.addcmul(b, centred.mul_(r), w, value=math.sqrt(n)), total, r


class _LayerNorm(torch.autograd.Function):
    """:func:`layer_norm_formula` with its gradient written out (per row, ``n = d_model``)::

        xhat = (x - mean(x)) * rstd,   rstd = 1 / sqrt(var(x) + eps),   y = xhat * w + b
        dL/db = sum_rows g,   dL/dw = sum_rows g * xhat,   with g = dL/dy
        dL/dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),   gw = g * w

    Kept for backward: the input ``x`` and two numbers per row from which ``mean`` and
    ``rstd`` follow (as ``torch.nn.functional.layer_norm`` keeps those two); ``xhat`` is
    rebuilt from them. The
    per-row means are products with ``w`` (``mean(gw) = g . w / n``, ``mean(gw * xhat) =
    (g * xhat) . w / n``) and the rest works in place: fewer passes over the residual
    stream than the formula left to autograd, which also keeps the centred input and the
    variance.

    When the gradient is itself to be differentiated (``create_graph=True``: grad mode is
    on in ``backward``), or under a ``torch.func`` transform of the backward pass,
    backward differentiates :func:`layer_norm_formula` instead: that gradient is built from
    ``x``, ``w`` and ``b`` by autograd, so it can be differentiated again.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
        y, total, r = _normalize(x, w, b, eps)
        ctx.save_for_backward(x, w, b, total, r)
        ctx.eps = eps  # type: ignore[attr-defined]
        return y

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w, b, total, r = ctx.saved_tensors  # type: ignore[attr-defined]
        if formula_needed(grad):
            eps: float = ctx.eps  # type: ignore[attr-defined]
            pullback = torch.func.vjp(lambda x, w, b: layer_norm_formula(x, w, b, eps), x, w, b)[1]
            return *pullback(grad), None
        n = w.shape[0]
        rstd = r * math.sqrt(n)
        xhat = torch.sub(x, total, alpha=1.0 / n).mul_(rstd)
        rows = tuple(range(grad.ndim - 1))
        buffer = grad * xhat  # becomes dL/dx below
        grad_w = buffer.sum(dim=rows)
        grad_b = grad.sum(dim=rows)
        mean_gw_xhat = (buffer @ w).unsqueeze(-1) / n
        mean_gw = (grad @ w).unsqueeze(-1) / n
        grad_x = torch.mul(grad, w, out=buffer)
        grad_x.sub_(mean_gw).addcmul_(xhat, mean_gw_xhat, value=-1.0).mul_(rstd)
        return grad_x, grad_w, grad_b, None


def layer_norm(
    x: Float[Tensor, "*rows d_model"],
    w: Float[Tensor, " d_model"],
    b: Float[Tensor, " d_model"],
    eps: float,
) -> Float[Tensor, "*rows d_model"]:
    """:func:`layer_norm_formula`, computed with the written-out backward of ``_LayerNorm``;
    :func:`tfs_core.fast_op.fast_op` says which of the formula and the faster forms runs
    when."""
    return fast_op(layer_norm_formula, _layer_norm_forward, _LayerNorm.apply, x, w, b, eps)


def _layer_norm_forward(x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
    """``_LayerNorm``'s forward computation alone, for where autograd records nothing."""
    return _normalize(x, w, b, eps)[0]
