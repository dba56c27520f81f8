"""The MLP block: a position-wise two-layer network that reads and writes the residual stream."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tfs_core.hook_point import HookPoint
from tfs_core.validation import require_positive_ints
from tfs_mlp.activations import ACTIVATIONS


class MLP(nn.Module):
    """Position-wise feed-forward network ``out = act(x W_in + b_in) W_out + b_out``.

    Vaswani et al. (2017), "Attention Is All You Need", 3.3 (there with ReLU; GPT-2 uses
    the tanh approximation of GELU). Each position is transformed independently.

    Args:
        d_model: width of the residual stream.
        d_mlp: hidden width (GPT-2 uses ``4 * d_model``).
        activation: ``"gelu"`` (GPT-2's tanh approximation) or ``"relu"``.
        init_std: standard deviation of the normal initialisation of ``W_in`` and
            ``W_out`` (GPT-2 uses 0.02); biases start at zero.

    Hook points (identity modules; attach ordinary forward hooks to read or replace):
    ``hook_pre`` (``x W_in + b_in``) and ``hook_post`` (after the activation).

    Shapes:
        x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``; the hidden activations
        are ``[batch, pos, d_mlp]``.
    """

    def __init__(
        self,
        d_model: int,
        d_mlp: int,
        activation: str = "gelu",
        *,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        require_positive_ints(d_model=d_model, d_mlp=d_mlp)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if not init_std >= 0:
            raise ValueError(f"init_std: expected a non-negative float, got {init_std!r}")
        self.d_model = d_model
        self.d_mlp = d_mlp
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.init_std = init_std
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.b_in = nn.Parameter(torch.empty(d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))
        self.b_out = nn.Parameter(torch.empty(d_model))
        # Hook points: identity modules for ordinary forward hooks (read or replace).
        self.hook_pre = HookPoint()  # [batch, pos, d_mlp], before the activation
        self.hook_post = HookPoint()  # [batch, pos, d_mlp], after it
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_in, mean=0.0, std=self.init_std)
        nn.init.normal_(self.W_out, mean=0.0, std=self.init_std)
        nn.init.zeros_(self.b_in)
        nn.init.zeros_(self.b_out)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        self._validate_input(x)
        # out = act(x W_in + b_in) W_out + b_out; every position is transformed alike.
        rows = x.reshape(-1, self.d_model)
        pre = self.hook_pre(torch.addmm(self.b_in, rows, self.W_in).view(*x.shape[:-1], -1))
        post: Tensor = self.hook_post(self.act(pre))
        out = torch.addmm(self.b_out, post.reshape(-1, self.d_mlp), self.W_out)
        return out.view(x.shape)

    def _validate_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` naming ``x`` unless it is ``[batch, pos, d_model]``."""
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected shape [batch, pos, d_model={self.d_model}], got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_mlp={self.d_mlp}, activation={self.activation!r}"
