"""Mistakes learners make in the token embedding, each written as tfs's formula with one step
wrong: :func:`~tfs_embeddings.checks.check_embed` names the one a learner's class computes.
They come from mixing the papers' conventions (Vaswani's scaled embedding and its positional
encoding), from ids counted from 1, and from confusing d_vocab with d_model.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tfs_core.checking import Formula
from tfs_embeddings.positional import sinusoid_table

Rows = Float[Tensor, "batch pos d_model"]


class Embed(Formula):
    """tfs's token embedding: ``x_0[b, p] = W_E[tokens[b, p]]``, the row of ``W_E`` that the
    token id picks, unchanged."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (tokens,) = inputs
        return self.rows(self.ids(tokens))

    def ids(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        return tokens

    def rows(self, ids: Int[Tensor, "batch pos"]) -> Rows:
        return self.w["W_E"][ids]


class ScaledBySqrtDModel(Embed):
    says = "the rows are multiplied by sqrt(d_model), as Vaswani et al. scale their embeddings"
    fix = "GPT-2 returns the row unscaled: W_E[token]"

    def rows(self, ids: Int[Tensor, "batch pos"]) -> Rows:
        return super().rows(ids) * math.sqrt(self.w["W_E"].shape[1])


class RowsNormalised(Embed):
    says = "each row is divided by its length, so every token's vector has norm 1"
    fix = "return the row as it is stored: W_E[token]; W_E learns the lengths"

    def rows(self, ids: Int[Tensor, "batch pos"]) -> Rows:
        rows = super().rows(ids)
        length: Tensor = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        return rows / length


class PositionsAdded(Embed):
    says = "a sinusoidal positional encoding is added inside the token embedding"
    fix = "Embed returns W_E[token] alone; the positional embedding is its own module, added after"

    def rows(self, ids: Int[Tensor, "batch pos"]) -> Rows:
        rows = super().rows(ids)
        return rows + sinusoid_table(*rows.shape[-2:]).to(rows.dtype)


class IdsFromOne(Embed):
    says = "the ids are taken as counted from 1: token t gets row t - 1 (and token 0 the last)"
    fix = "ids count from 0: token t gets row t, W_E[token]"

    def ids(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        return tokens - 1


class IdsModuloDModel(Embed):
    says = "the ids are wrapped modulo d_model, so ids from d_model on get another token's row"
    fix = "d_vocab, not d_model, counts the ids: token t gets row t of W_E [d_vocab, d_model]"

    def ids(self, tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
        return tokens % self.w["W_E"].shape[1]


MISTAKES: list[type[Embed]] = [
    ScaledBySqrtDModel,
    RowsNormalised,
    PositionsAdded,
    IdsFromOne,
    IdsModuloDModel,
]
