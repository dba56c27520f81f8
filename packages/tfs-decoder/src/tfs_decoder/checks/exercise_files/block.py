"""Exercise: the residual block. Write ``forward``, then check it with

tfs check block {file}:ResidualBlock
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from tfs_decoder import LayerNorm  # or your own from `tfs exercise layernorm`


class ResidualBlock(nn.Module):
    """A pre-LayerNorm block (GPT-2; Radford et al. 2019, section 2.3)::

        resid_mid  = resid_pre + attn(ln1(resid_pre))
        resid_post = resid_mid + mlp(ln2(resid_mid))

    Each sublayer reads the residual stream through its LayerNorm and adds what it writes.
    ``attn`` and ``mlp`` are modules mapping ``[batch, pos, d_model]`` to the same shape.

    Shapes: resid_pre ``[batch, pos, d_model]`` -> resid_post ``[batch, pos, d_model]``.
    """

    def __init__(self, d_model: int, attn: nn.Module, mlp: nn.Module, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.ln1 = LayerNorm(d_model, eps=eps)
        self.attn = attn
        self.ln2 = LayerNorm(d_model, eps=eps)
        self.mlp = mlp

    def forward(
        self, resid_pre: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_model"]:
        raise NotImplementedError
