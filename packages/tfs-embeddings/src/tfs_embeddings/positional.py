"""Positional encodings: the part of the first residual stream that says where a token is.

Both modules return only the positional part, ``[batch, pos, d_model]``; the caller adds
it to the token embedding. Both hold their table as ``W_pos [n_ctx, d_model]``.

``offset`` is the position of the first token: when generating with a key/value cache
(``tfs_attention.KVCache``) the model sees only the new tokens, which sit after the
``offset`` tokens already cached, so they need the rows ``W_pos[offset:offset + pos]``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_core.validation import require_positive_ints
from tfs_embeddings._validation import validate_offset, validate_tokens


class LearnedPositionalEmbedding(nn.Module):
    """Learned absolute positions ``pos_embed[b, p] = W_pos[p]`` (as in GPT-2).

    Args:
        n_ctx: the longest sequence accepted.
        d_model: width of the residual stream.
        init_std: standard deviation of the normal initialisation (GPT-2 uses 0.02;
            some implementations use 0.01).

    Shapes:
        tokens ``[batch, pos]`` (integer; only its shape is read) -> ``[batch, pos, d_model]``,
        the positions ``offset .. offset + pos - 1``.
    """

    def __init__(self, n_ctx: int, d_model: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        require_positive_ints(n_ctx=n_ctx, d_model=d_model)
        self.n_ctx = n_ctx
        self.d_model = d_model
        self.init_std = init_std
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_pos, mean=0.0, std=self.init_std)

    def forward(
        self, tokens: Int[Tensor, "batch pos"], offset: int = 0
    ) -> Float[Tensor, "batch pos d_model"]:
        validate_tokens(tokens, n_ctx=self.n_ctx)
        batch, pos = tokens.shape
        validate_offset(offset, pos, self.n_ctx)
        return self.W_pos[offset : offset + pos].expand(batch, pos, self.d_model)

    def extra_repr(self) -> str:
        return f"n_ctx={self.n_ctx}, d_model={self.d_model}"


def sinusoid_table(n_ctx: int, d_model: int) -> Float[Tensor, "n_ctx d_model"]:
    """``PE[p, 2i] = sin(p / 10000^(2i/d_model))``, ``PE[p, 2i+1] = cos(p / 10000^(2i/d_model))``.

    Vaswani et al. (2017), "Attention Is All You Need", section 3.5. For odd ``d_model``
    the last column is a sine with no cosine partner.
    """
    position = torch.arange(n_ctx, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / 10000.0 ** (two_i / d_model)
    table = torch.empty(n_ctx, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.to(torch.get_default_dtype())


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal positions ``pos_embed[b, p] = PE[p]`` (see :func:`sinusoid_table`).

    The table has no parameters; it is a non-persistent buffer, so it moves with
    ``.to(device)`` but is not written to state dicts. Since ``PE[p + k]`` is a linear
    function of ``PE[p]``, attention can learn relative offsets (Vaswani et al. 2017, 3.5).

    Args:
        n_ctx: the longest sequence accepted.
        d_model: width of the residual stream.

    Shapes:
        tokens ``[batch, pos]`` (integer; only its shape is read) -> ``[batch, pos, d_model]``,
        the positions ``offset .. offset + pos - 1``.
    """

    W_pos: Tensor

    def __init__(self, n_ctx: int, d_model: int) -> None:
        super().__init__()
        require_positive_ints(n_ctx=n_ctx, d_model=d_model)
        self.n_ctx = n_ctx
        self.d_model = d_model
        self.register_buffer("W_pos", sinusoid_table(n_ctx, d_model), persistent=False)

    def forward(
        self, tokens: Int[Tensor, "batch pos"], offset: int = 0
    ) -> Float[Tensor, "batch pos d_model"]:
        validate_tokens(tokens, n_ctx=self.n_ctx)
        batch, pos = tokens.shape
        validate_offset(offset, pos, self.n_ctx)
        return self.W_pos[offset : offset + pos].expand(batch, pos, self.d_model)

    def extra_repr(self) -> str:
        return f"n_ctx={self.n_ctx}, d_model={self.d_model}"
