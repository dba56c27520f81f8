"""Mistakes learners make in assembling the decoder, each written as tfs's formula with one
step wrong: :func:`~tfs_decoder.checks.check_decoder` names the one a learner's class
computes."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tfs_core.checking import Formula
from tfs_decoder.checks.block_mistakes import EPS, Block, part
from tfs_decoder.layernorm import layer_norm_formula


class Decoder(Formula):
    """GPT-2: ``x = W_E[tokens] + W_pos[:pos]``, each block in turn on the residual stream,
    then ``logits = ln_final(x) W_U + b_U``."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (tokens,) = inputs
        x = self.embed(tokens) + self.positions(tokens)
        return self.unembed(self.ln_final(self.blocks(x)))

    def embed(self, tokens: Tensor) -> Tensor:
        return self.w["embed.W_E"][tokens]

    def positions(self, tokens: Tensor) -> Tensor:
        return self.w["pos_embed.W_pos"][: tokens.shape[1]]

    def n_layers(self) -> int:
        return len({name.split(".")[1] for name in self.w if name.startswith("blocks.")})

    def blocks(self, x: Tensor) -> Tensor:
        for layer in range(self.n_layers()):
            x = Block(part(self.w, f"blocks.{layer}"))(x)
        return x

    def ln_final(self, x: Tensor) -> Tensor:
        return layer_norm_formula(x, self.w["ln_final.w"], self.w["ln_final.b"], EPS)

    def unembed(self, x: Tensor) -> Tensor:
        return x @ self.w["unembed.W_U"] + self.w["unembed.b_U"]


class NoFinalLayerNorm(Decoder):
    says = "ln_final is left out before the unembedding"
    fix = "logits = ln_final(x) W_U + b_U"

    def ln_final(self, x: Tensor) -> Tensor:
        return x


class NoPositions(Decoder):
    says = "the positional embedding is never added"
    fix = "x = W_E[tokens] + W_pos[:pos]"

    def positions(self, tokens: Tensor) -> Tensor:
        return torch.zeros(())


class PositionsByToken(Decoder):
    says = "W_pos is indexed by the token ids instead of the positions"
    fix = "position p adds W_pos[p]: W_pos[:pos], or W_pos[arange(pos)]"

    def positions(self, tokens: Tensor) -> Tensor:
        return self.w["pos_embed.W_pos"][tokens]


class EmbeddingScaled(Decoder):
    says = "the token embedding is multiplied by sqrt(d_model), as in the 2017 paper"
    fix = "GPT-2 adds W_E[tokens] unscaled"

    def embed(self, tokens: Tensor) -> Tensor:
        table = self.w["embed.W_E"]
        return table[tokens] * math.sqrt(table.shape[1])


class BlocksNotChained(Decoder):
    says = "every block reads the embeddings, and only the last one's output is kept"
    fix = "thread the residual stream through them: for block in blocks: x = block(x)"

    def blocks(self, x: Tensor) -> Tensor:
        out = x
        for layer in range(self.n_layers()):
            out = Block(part(self.w, f"blocks.{layer}"))(x)
        return out


class TiedUnembedding(Decoder):
    says = "the logits are read with W_E^T, not W_U (tied weights that tfs keeps apart)"
    fix = "logits = ln_final(x) W_U + b_U"

    def unembed(self, x: Tensor) -> Tensor:
        return x @ self.w["embed.W_E"].T + self.w["unembed.b_U"]


class Probabilities(Decoder):
    says = "the decoder returns probabilities (a softmax over the logits)"
    fix = "return the logits; the loss and sampling apply the softmax"

    def unembed(self, x: Tensor) -> Tensor:
        return super().unembed(x).softmax(dim=-1)


MISTAKES: list[type[Decoder]] = [
    NoFinalLayerNorm,
    NoPositions,
    PositionsByToken,
    EmbeddingScaled,
    BlocksNotChained,
    TiedUnembedding,
    Probabilities,
]
