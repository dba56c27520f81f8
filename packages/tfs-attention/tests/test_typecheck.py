"""The runtime shape checker installed by conftest.py is really on for tfs_attention.

Every other test relies on it: a shape mistake inside the package fails loudly during tests
instead of broadcasting silently. These tests fail if the import hook stops wrapping the
package (for example if the package were imported before the hook was installed).
"""

from __future__ import annotations

import inspect

import jaxtyping
import pytest
import torch

from tfs_attention import MultiHeadAttention


def test_forward_is_wrapped_by_the_checker() -> None:
    assert inspect.unwrap(MultiHeadAttention.forward) is not MultiHeadAttention.forward


def test_wrong_rank_input_raises_typecheck_error_before_value_error() -> None:
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.randn(3, 8)  # [pos, d_model]: the batch axis is missing
    # The module body would raise ValueError for this input; the checker must run first.
    with pytest.raises(jaxtyping.TypeCheckError, match="x") as info:
        attn(x)
    assert not isinstance(info.value, ValueError)
    # The body's own check, reached without the checker, is the ValueError.
    with pytest.raises(
        ValueError, match=r"x: expected shape \[batch, pos, d_model=8\], got \(3, 8\)"
    ):
        inspect.unwrap(MultiHeadAttention.forward)(attn, x)


def test_mask_batch_inconsistent_with_x_raises_typecheck_error() -> None:
    # "batch" and "pos" are bound by x and must match in attention_mask.
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    with pytest.raises(jaxtyping.TypeCheckError, match="attention_mask"):
        attn(torch.randn(2, 5, 8), torch.ones(3, 5, dtype=torch.bool))


def test_integer_input_raises_typecheck_error() -> None:
    # x is annotated Float; integer token ids passed by mistake are rejected by the checker.
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    with pytest.raises(jaxtyping.TypeCheckError, match="x"):
        attn(torch.zeros(2, 5, 8, dtype=torch.long))
