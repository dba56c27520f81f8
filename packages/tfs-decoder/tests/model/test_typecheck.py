"""The runtime shape checker is on for this package's tests (installed by conftest.py).

Every other test relies on it: a wrong shape anywhere in tfs_decoder (or the packages it
builds on) raises jaxtyping.TypeCheckError before the function body runs. If the hook were
lost, these tests fail instead of the rest silently checking nothing.
"""

from __future__ import annotations

import jaxtyping
import pytest
import torch

from tfs_attention import MultiHeadAttention
from tfs_decoder import Decoder, DecoderConfig, LayerNorm, ResidualBlock, next_token_loss
from tfs_mlp import MLP

CONFIG = DecoderConfig(d_vocab=20, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_layers=1, n_ctx=6)


def make_decoder() -> Decoder:
    torch.manual_seed(0)
    return Decoder(CONFIG)


def test_typecheck_error_is_a_type_error() -> None:
    # So callers that catch TypeError also catch shape errors.
    assert issubclass(jaxtyping.TypeCheckError, TypeError)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_decoder_rejects_tokens_that_are_not_batch_by_pos(shape: tuple[int, ...]) -> None:
    tokens = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens"):
        make_decoder()(tokens)


def test_decoder_rejects_float_tokens() -> None:
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens"):
        make_decoder()(torch.zeros(2, 3))


def test_decoder_accepts_every_signed_integer_dtype() -> None:
    model = make_decoder()
    # jaxtyping's Int means signed integers; unsigned ids are a TypeCheckError.
    for dtype in (torch.int64, torch.int32, torch.int16):
        assert model(torch.ones(2, 3, dtype=dtype)).shape == (2, 3, CONFIG.d_vocab)


def test_block_rejects_a_2d_residual_stream() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(8, MultiHeadAttention(8, 2), MLP(8, 16))
    with pytest.raises(jaxtyping.TypeCheckError, match="resid_pre"):
        block(torch.zeros(3, 8))


def test_layernorm_rejects_integer_input() -> None:
    with pytest.raises(jaxtyping.TypeCheckError, match="x"):
        LayerNorm(8)(torch.zeros(2, 3, 8, dtype=torch.long))


def test_loss_rejects_mismatched_batch() -> None:
    # The annotation binds batch and pos across arguments: logits for 2 sequences,
    # tokens for 3 is caught before the body runs.
    logits = torch.zeros(2, 4, CONFIG.d_vocab)
    tokens = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(jaxtyping.TypeCheckError, match="batch"):
        next_token_loss(logits, tokens)


def test_decoder_rejects_unsigned_tokens() -> None:
    with pytest.raises(jaxtyping.TypeCheckError, match="tokens"):
        make_decoder()(torch.ones(2, 3, dtype=torch.uint8))
