"""The decoder-only transformer: embeddings, residual blocks, final LayerNorm, unembedding."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_attention import KVCache, MultiHeadAttention
from tfs_core.hook_point import HookPoint
from tfs_decoder import hooks
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

    Extension points: ``make_attn(config)`` and ``make_mlp(config)`` build each block's
    attention and MLP in place of ``MultiHeadAttention`` and ``MLP`` (any module mapping
    ``[batch, pos, d_model]`` to the same shape). A weight named ``W_O`` or ``W_out`` in
    them gets the residual-write scaling too.

    Hook points (see :mod:`tfs_decoder.hooks`, :meth:`run_with_cache` and
    :meth:`run_with_hooks`): ``hook_embed``, ``hook_pos_embed``, then in every block
    ``blocks.{i}.hook_resid_pre/hook_attn_out/hook_resid_mid/hook_mlp_out/hook_resid_post``,
    ``blocks.{i}.ln1/ln2.hook_normalized``, ``blocks.{i}.attn.hook_q/hook_k/hook_v/hook_z``
    ``[batch, pos, head, d_head]``, ``blocks.{i}.attn.hook_pattern`` ``[batch, head, dest,
    src]``, ``blocks.{i}.mlp.hook_pre/hook_post`` ``[batch, pos, d_mlp]``, and
    ``ln_final.hook_normalized``.

    Shapes:
        tokens ``[batch, pos]`` (integer, ``pos <= n_ctx``) -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(
        self,
        config: DecoderConfig,
        *,
        make_attn: Callable[[DecoderConfig], nn.Module] | None = None,
        make_mlp: Callable[[DecoderConfig], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise TypeError(f"config: expected a DecoderConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.embed = Embed(c.d_vocab, c.d_model, init_std=c.init_std)
        self.pos_embed: LearnedPositionalEmbedding | SinusoidalPositionalEncoding = (
            LearnedPositionalEmbedding(c.n_ctx, c.d_model, init_std=c.init_std)
            if c.positional == "learned"
            else SinusoidalPositionalEncoding(c.n_ctx, c.d_model)
        )
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c.d_model,
                (make_attn or _default_attn)(c),
                (make_mlp or _default_mlp)(c),
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

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        *,
        kv_cache: Sequence[KVCache] | None = None,
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """The logits for ``tokens``.

        With ``kv_cache`` (one :class:`~tfs_attention.KVCache` per block, from
        :meth:`make_kv_cache`), ``tokens`` are the positions after the ones already cached:
        they get the positions ``cached .. cached + pos - 1`` and attend to the cached
        keys and values too, so feeding a sequence in pieces gives the same logits as
        feeding it whole. ``cached + pos`` must not exceed ``n_ctx``.
        """
        # An empty batch or sequence has nothing to predict; say so before the blocks
        # fail on it with a reshape error. (Dtype, rank, n_ctx and ids: Embed, pos_embed.)
        if isinstance(tokens, Tensor) and tokens.ndim == 2 and 0 in tokens.shape:
            raise ValueError(
                f"tokens: expected shape [batch >= 1, pos >= 1], got {tuple(tokens.shape)}"
            )
        offset = 0
        if kv_cache is not None:
            offset = self._validate_kv_cache(kv_cache)
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(
            self.pos_embed(tokens, offset)
        )
        if self.training and self.config.dropout > 0:
            residual = F.dropout(residual, self.config.dropout)
        for i, block in enumerate(self.blocks):
            residual = block(residual, kv_cache=None if kv_cache is None else kv_cache[i])
        logits: Tensor = self.unembed(self.ln_final(residual))
        return logits

    def make_kv_cache(self) -> list[KVCache]:
        """An empty key/value cache for :meth:`forward`: one ``KVCache(max_pos=n_ctx)`` per
        block. It takes the batch size, dtype and device of the first forward it is used in.
        """
        for i, block in enumerate(self.blocks):
            if not isinstance(block.attn, MultiHeadAttention):
                raise TypeError(
                    f"blocks.{i}.attn: expected a MultiHeadAttention to hold a key/value cache, "
                    f"got {type(block.attn).__name__}; generate with use_cache=False"
                )
        return [KVCache(self.config.n_ctx) for _ in self.blocks]

    def _validate_kv_cache(self, kv_cache: Sequence[KVCache]) -> int:
        """The number of cached positions, after checking there is one cache per block."""
        caches = [cache for cache in kv_cache if isinstance(cache, KVCache)]
        lengths = {cache.length for cache in caches}
        if len(caches) != len(kv_cache) or len(kv_cache) != len(self.blocks) or len(lengths) != 1:
            raise ValueError(
                f"kv_cache: expected {len(self.blocks)} KVCache objects of equal length, one "
                f"per block (see make_kv_cache), got {[repr(cache) for cache in kv_cache]}"
            )
        return lengths.pop()

    def run_with_cache(
        self, tokens: Int[Tensor, "batch pos"], *, names: Iterable[str] | None = None
    ) -> tuple[Float[Tensor, "batch pos d_vocab"], dict[str, Tensor]]:
        """``logits, cache``: the logits and every hook point's activation (or only those in
        ``names``), detached. See :func:`tfs_decoder.hooks.run_with_cache`."""
        logits, cache = hooks.run_with_cache(self, tokens, names=names)
        return logits, cache

    def run_with_hooks(
        self,
        tokens: Int[Tensor, "batch pos"],
        *,
        fwd_hooks: Sequence[tuple[str, hooks.HookFn]],
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """The logits with ``fn(activation, name)`` called at each named hook point; what it
        returns (if not ``None``) replaces the activation. See
        :func:`tfs_decoder.hooks.run_with_hooks`."""
        logits: Tensor = hooks.run_with_hooks(self, tokens, fwd_hooks=fwd_hooks)
        return logits

    def generate(
        self,
        tokens: Int[Tensor, "batch pos"],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        eos_token: int | None = None,
    ) -> Int[Tensor, "batch total"]:
        """Continue ``tokens`` by up to ``max_new_tokens`` sampled tokens.

        Each step samples with :func:`tfs_decoder.sample_next_token` (``temperature=0`` is
        greedy) from the logits of the last ``n_ctx`` tokens; rows that have generated
        ``eos_token`` are padded with it, and generation stops once all have. Runs without
        gradients in eval mode and restores the training flags afterwards.

        With ``use_cache`` the prompt is run once and each later step feeds only the newest
        token through a key/value cache (:meth:`make_kv_cache`). Once the sequence outgrows
        ``n_ctx`` the cache is dropped and each step runs the last ``n_ctx`` tokens in
        full, as without it: cached keys carry their absolute positions, so they cannot be
        shifted. Cached and uncached generation give the same tokens either way.
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
            kv_cache=self.make_kv_cache() if use_cache else None,
        )


def _default_attn(c: DecoderConfig) -> nn.Module:
    return MultiHeadAttention(
        c.d_model,
        c.n_heads,
        c.d_head,
        dropout=c.dropout,
        init_std=c.init_std,
        backend=c.attention_backend,
    )


def _default_mlp(c: DecoderConfig) -> nn.Module:
    return MLP(c.d_model, c.d_mlp, c.activation, init_std=c.init_std)
