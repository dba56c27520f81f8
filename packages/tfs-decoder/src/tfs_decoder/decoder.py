"""The decoder-only transformer: embeddings, residual blocks, final LayerNorm, unembedding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder.block import ResidualBlock
from tfs_decoder.config import DecoderConfig
from tfs_decoder.generate import generate_tokens
from tfs_decoder.layernorm import LayerNorm
from tfs_embeddings import (
    Embed,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    Unembed,
)
from tfs_mlp import MLP


class Decoder(nn.Module):
    """A GPT-2-style decoder-only transformer (Radford et al. 2019)::

        x_0     = W_E[tokens] + W_pos[positions]        # the residual stream
        x_{i+1} = blocks[i](x_i)                         # i = 0 .. n_layers - 1
        logits  = ln_final(x_n) @ W_U + b_U

    Attention is causal, so the logits at position ``p`` depend only on tokens ``<= p``
    and predict token ``p + 1`` (see :func:`tfs_decoder.next_token_loss`).

    Initialisation follows GPT-2: every weight ``N(0, init_std)``, biases zero, LayerNorm
    ``w = 1, b = 0``, and the weights that write the residual stream (``W_O`` and
    ``W_out``) scaled by ``1 / sqrt(2 * n_layers)``, so the stream's variance does not
    grow with depth.

    Shapes:
        tokens ``[batch, pos]`` (integer, ``pos <= n_ctx``) -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config: expected a DecoderConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.embed = Embed(c.d_vocab, c.d_model, init_std=c.init_std)
        self.pos_embed: nn.Module = (
            LearnedPositionalEmbedding(c.n_ctx, c.d_model, init_std=c.init_std)
            if c.positional == "learned"
            else SinusoidalPositionalEncoding(c.n_ctx, c.d_model)
        )
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c.d_model,
                MultiHeadAttention(
                    c.d_model, c.n_heads, c.d_head, dropout=c.dropout, init_std=c.init_std
                ),
                MLP(c.d_model, c.d_mlp, c.activation, init_std=c.init_std),
                eps=c.ln_eps,
                dropout=c.dropout,
            )
            for _ in range(c.n_layers)
        )
        self.ln_final = LayerNorm(c.d_model, eps=c.ln_eps)
        self.unembed = Unembed(c.d_model, c.d_vocab, init_std=c.init_std)
        self._scale_residual_writes()

    def reset_parameters(self) -> None:
        """Re-draw every parameter with the initialisation described above."""
        for module in self.modules():
            reset = getattr(module, "reset_parameters", None)
            if module is not self and callable(reset):
                reset()
        self._scale_residual_writes()

    @torch.no_grad()
    def _scale_residual_writes(self) -> None:
        scale = 1.0 / math.sqrt(2 * self.config.n_layers)
        for name, parameter in self.named_parameters():
            if name.endswith((".attn.W_O", ".mlp.W_out")):
                parameter.mul_(scale)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        residual: Tensor = self.embed(tokens) + self.pos_embed(tokens)
        residual = F.dropout(residual, self.config.dropout, self.training)
        for block in self.blocks:
            residual = block(residual)
        logits: Tensor = self.unembed(self.ln_final(residual))
        return logits

    def generate(
        self,
        tokens: Int[Tensor, "batch pos"],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        eos_token: int | None = None,
    ) -> Int[Tensor, "batch total"]:
        """Continue ``tokens`` by up to ``max_new_tokens`` sampled tokens.

        Each step feeds the last ``n_ctx`` tokens and samples with
        :func:`tfs_decoder.sample_next_token` (``temperature=0`` is greedy); rows that have
        generated ``eos_token`` are padded with it, and generation stops once all have.
        Runs without gradients in eval mode and restores the training flags afterwards.
        See :func:`tfs_decoder.generate.generate_tokens`.

        Shapes:
            tokens ``[batch, pos]`` (integer) -> ``[batch, pos + new]``, ``new <= max_new_tokens``.
        """
        return generate_tokens(
            self,
            tokens,
            max_new_tokens,
            n_ctx=self.config.n_ctx,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            eos_token=eos_token,
        )
