"""Token embedding: the first write into the residual stream."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_core.validation import require_positive_ints
from tfs_embeddings._validation import validate_tokens


class Embed(nn.Module):
    """Token embedding ``x_0[b, p] = W_E[tokens[b, p]]``.

    Each token id selects one row of ``W_E`` (Elhage et al. 2021, "A Mathematical
    Framework for Transformer Circuits", section "Transformer Overview": the token
    embedding writes the residual stream). Equivalent to ``one_hot(tokens) @ W_E``.

    Args:
        d_vocab: number of token ids.
        d_model: width of the residual stream.
        init_std: standard deviation of the normal initialisation (GPT-2 uses 0.02).

    Shapes:
        tokens ``[batch, pos]`` (integer) -> ``[batch, pos, d_model]``.
    """

    def __init__(self, d_vocab: int, d_model: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        require_positive_ints(d_vocab=d_vocab, d_model=d_model)
        self.d_vocab = d_vocab
        self.d_model = d_model
        self.init_std = init_std
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_E, mean=0.0, std=self.init_std)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        validate_tokens(tokens, d_vocab=self.d_vocab)
        # index_select, not W_E[tokens]: its backward (index_add_) sums the rows of a
        # repeated token in a fixed order, so the gradient is the same at any thread count;
        # indexing's backward adds them in whatever order the threads reach them.
        rows = torch.index_select(self.W_E, 0, tokens.reshape(-1).long())
        return rows.view(*tokens.shape, self.d_model)

    def extra_repr(self) -> str:
        return f"d_vocab={self.d_vocab}, d_model={self.d_model}"
