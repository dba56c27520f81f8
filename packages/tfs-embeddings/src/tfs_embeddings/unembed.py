"""Unembedding: reads the residual stream out as next-token logits."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from tfs_core.validation import require_positive_ints


class Unembed(nn.Module):
    """Unembedding ``logits = x @ W_U + b_U``.

    Maps the final residual stream to one logit per token id (Elhage et al. 2021,
    "A Mathematical Framework for Transformer Circuits": W_U reads the residual stream).

    Args:
        d_model: width of the residual stream.
        d_vocab: number of token ids.
        init_std: standard deviation of the normal initialisation of ``W_U``; ``b_U``
            starts at zero.

    Shapes:
        residual ``[batch, pos, d_model]`` -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self, d_model: int, d_vocab: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        require_positive_ints(d_model=d_model, d_vocab=d_vocab)
        self.d_model = d_model
        self.d_vocab = d_vocab
        self.init_std = init_std
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab))
        self.b_U = nn.Parameter(torch.empty(d_vocab))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_U, mean=0.0, std=self.init_std)
        nn.init.zeros_(self.b_U)

    def forward(
        self, residual: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_vocab"]:
        if residual.ndim != 3 or residual.shape[-1] != self.d_model:
            raise ValueError(
                f"residual: expected shape [batch, pos, d_model={self.d_model}], "
                f"got {tuple(residual.shape)}"
            )
        return residual @ self.W_U + self.b_U

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_vocab={self.d_vocab}"
