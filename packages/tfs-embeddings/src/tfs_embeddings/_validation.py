"""Argument validation shared by the modules of this package."""

from __future__ import annotations

import torch
from torch import Tensor

from tfs_core.fast_op import under_transform


def validate_tokens(
    tokens: Tensor, *, n_ctx: int | None = None, d_vocab: int | None = None
) -> None:
    """Raise if `tokens` is not an integer [batch, pos] tensor of ids that fit."""
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens: expected an integer tensor, got dtype {tokens.dtype}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens: expected shape [batch, pos], got {tuple(tokens.shape)}")
    if n_ctx is not None and tokens.shape[1] > n_ctx:
        raise ValueError(f"tokens: expected at most n_ctx={n_ctx} positions, got {tokens.shape[1]}")
    # The range check reads the values: skipped under torch.compile, which cannot branch on
    # them, and under torch.func transforms, where vmap cannot read them; an id out of range
    # then fails in the lookup itself.
    if (
        d_vocab is not None
        and tokens.numel() > 0
        and not torch.compiler.is_compiling()
        and not under_transform()
    ):
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= d_vocab:
            bad = low if low < 0 else high
            raise ValueError(f"tokens: expected ids in [0, d_vocab={d_vocab}), got id {bad}")


def validate_offset(offset: int, pos: int, n_ctx: int) -> None:
    """Raise unless positions ``offset .. offset + pos - 1`` all lie in ``[0, n_ctx)``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset: expected an int >= 0, got {offset!r}")
    if offset + pos > n_ctx:
        raise ValueError(
            f"offset: expected offset + pos <= n_ctx={n_ctx}, got offset={offset} and pos={pos}"
        )
