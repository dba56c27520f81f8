"""LayerNorm: normalises each position of the residual stream before a sublayer reads it."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


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
        y: Tensor = _LayerNorm.apply(x, self.w, self.b, self.eps)  # type: ignore[no-untyped-call]
        normalized: Tensor = self.hook_normalized(y)
        return normalized

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"


class _LayerNorm(torch.autograd.Function):
    """The forward above and its gradient, written out (per row, ``n = d_model``)::

        xhat = (x - mean(x)) * rstd,   rstd = 1 / sqrt(var(x) + eps),   y = xhat * w + b
        dL/db = sum_rows g,   dL/dw = sum_rows g * xhat,   with g = dL/dy
        dL/dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)),   gw = g * w

    Only ``xhat`` and ``rstd`` are kept for backward. The per-row means are products with
    ``w`` (``mean(gw) = g . w / n``, ``mean(gw * xhat) = (g * xhat) . w / n``) and the rest
    works in place: fewer passes over the residual stream than the same formula left to
    autograd, which would also keep the centred input and the variance.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, w: Tensor, b: Tensor, eps: float) -> Tensor:
        xhat = x - x.mean(dim=-1, keepdim=True)
        # var = |x - mean|^2 / n; the norm reads the row once and writes nothing.
        norm = torch.linalg.vector_norm(xhat, dim=-1, keepdim=True)
        rstd = norm.square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        xhat.mul_(rstd)
        ctx.save_for_backward(xhat, rstd, w)
        return torch.addcmul(b, xhat, w)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        xhat, rstd, w = ctx.saved_tensors  # type: ignore[attr-defined]
        rows = tuple(range(grad.ndim - 1))
        n = w.shape[0]
        buffer = grad * xhat  # becomes dL/dx below: one new tensor in all
        grad_w = buffer.sum(dim=rows)
        grad_b = grad.sum(dim=rows)
        mean_gw_xhat = (buffer @ w).unsqueeze(-1) / n
        mean_gw = (grad @ w).unsqueeze(-1) / n
        grad_x = torch.mul(grad, w, out=buffer)
        grad_x.sub_(mean_gw).addcmul_(xhat, mean_gw_xhat, value=-1.0).mul_(rstd)
        return grad_x, grad_w, grad_b, None
