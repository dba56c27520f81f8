"""The runtime shape checker installed by conftest.py is really on for tfs_embeddings.

Every other test relies on it: a shape or dtype mistake inside the package fails loudly during
tests instead of broadcasting silently. These tests fail if the import hook stops wrapping the
package (for example if the package were imported before the hook was installed), because
then the modules' own ValueErrors, or no error at all, would be seen instead.
"""

from __future__ import annotations

import inspect

import jaxtyping
import pytest
import torch

from tfs_embeddings import Embed, LearnedPositionalEmbedding, SinusoidalPositionalEncoding, Unembed


@pytest.mark.parametrize(
    "cls", [Embed, Unembed, LearnedPositionalEmbedding, SinusoidalPositionalEncoding]
)
def test_forward_is_wrapped_by_the_checker(cls: type[torch.nn.Module]) -> None:
    assert inspect.unwrap(cls.forward) is not cls.forward


def test_unembed_wrong_rank_raises_typecheck_error_not_value_error() -> None:
    unembed = Unembed(d_model=8, d_vocab=13)
    residual = torch.randn(3, 8)  # [pos, d_model]: the batch axis is missing
    with pytest.raises(jaxtyping.TypeCheckError, match="residual") as info:
        unembed(residual)
    # The body would raise ValueError for this input; the checker must have run first.
    assert not isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="residual: expected shape"):
        inspect.unwrap(Unembed.forward)(unembed, residual)


def test_unembed_integer_residual_raises_typecheck_error() -> None:
    # The body has no dtype check: an integer residual would reach the matmul.
    unembed = Unembed(d_model=4, d_vocab=5)
    with pytest.raises(jaxtyping.TypeCheckError, match="residual"):
        unembed(torch.zeros(2, 3, 4, dtype=torch.long))


def test_embed_float_tokens_raise_typecheck_error() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens") as info:
        embed(torch.zeros(2, 3))
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("cls", [LearnedPositionalEmbedding, SinusoidalPositionalEncoding])
def test_positional_wrong_rank_tokens_raise_typecheck_error(
    cls: type[LearnedPositionalEmbedding | SinusoidalPositionalEncoding],
) -> None:
    module = cls(n_ctx=8, d_model=4)
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens") as info:
        module(torch.zeros(5, dtype=torch.long))
    assert not isinstance(info.value, ValueError)


def test_embed_unsigned_tokens_raise_typecheck_error() -> None:
    # jaxtyping's Int covers signed integers only; uint8 ids are refused at the boundary.
    embed = Embed(d_vocab=10, d_model=4)
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens"):
        embed(torch.zeros(2, 3, dtype=torch.uint8))
