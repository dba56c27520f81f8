"""A GPT-2-style decoder-only transformer built from tfs-embeddings, tfs-attention and tfs-mlp."""

from tfs_decoder.block import ResidualBlock
from tfs_decoder.config import DecoderConfig
from tfs_decoder.decoder import Decoder
from tfs_decoder.generate import sample_next_token
from tfs_decoder.hf import from_hf_gpt2, to_hf_gpt2
from tfs_decoder.hooks import hook_points, run_with_cache, run_with_hooks
from tfs_decoder.layernorm import LayerNorm
from tfs_decoder.loss import cross_entropy, next_token_loss

__all__ = [
    "Decoder",
    "DecoderConfig",
    "LayerNorm",
    "ResidualBlock",
    "cross_entropy",
    "from_hf_gpt2",
    "hook_points",
    "next_token_loss",
    "run_with_cache",
    "run_with_hooks",
    "sample_next_token",
    "to_hf_gpt2",
]
