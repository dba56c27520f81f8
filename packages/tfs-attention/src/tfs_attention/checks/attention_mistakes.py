"""Mistakes learners make in attention, each written as tfs's formula with one step wrong.

:func:`~tfs_attention.checks.check_attention` computes every one of them under tfs's
weights and names the one a learner's class computes. They come from the slips the
curricula warn about (ARENA 1.1, Hilton's chapter 1, nanoGPT's video): where and how the
mask goes, the softmax axis, the scale, the heads, the biases, the transposes.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from tfs_core.checking import Formula

Heads = Float[Tensor, "batch head pos d_head"]
Scores = Float[Tensor, "batch head dest src"]


class Attention(Formula):
    """tfs's attention step by step: for each head ``h``, ``q, k, v = x W[h] + b[h]``;
    ``scores = q k^T / sqrt(d_head)``; sources after the destination hidden with ``-inf``;
    softmax over sources; ``z = pattern v``; ``out = sum_h z_h W_O[h] + b_O``."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        q, k, v = (self.project(x, name) for name in "QKV")
        return self.out(self.z(self.softmax(self.mask(self.scores(q, k))), v))

    def project(self, x: Tensor, name: str) -> Heads:
        return torch.einsum("bpm,hmd->bhpd", x, self.w[f"W_{name}"]) + self.w[f"b_{name}"][:, None]

    def scores(self, q: Heads, k: Heads) -> Scores:
        return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])

    def hidden(self, pos: int) -> Tensor:
        return torch.ones(pos, pos, dtype=torch.bool).triu(1)

    def mask(self, scores: Scores) -> Scores:
        return scores.masked_fill(self.hidden(scores.shape[-1]), -math.inf)

    def softmax(self, scores: Scores) -> Scores:
        return scores.softmax(dim=-1)

    def z(self, pattern: Scores, v: Heads) -> Heads:
        return pattern @ v

    def out(self, z: Heads) -> Tensor:
        return torch.einsum("bhpd,hdm->bpm", z, self.w["W_O"]) + self.w["b_O"]


class MaskAfterSoftmax(Attention):
    says = "the mask is applied after the softmax, so each row's weights no longer sum to 1"
    fix = "hide the scores (-inf) first, then take the softmax"

    def softmax(self, scores: Scores) -> Scores:
        return scores.softmax(dim=-1).masked_fill(self.hidden(scores.shape[-1]), 0.0)

    def mask(self, scores: Scores) -> Scores:
        return scores


class MaskedWithZero(Attention):
    says = "hidden scores are set to 0, and exp(0) still gives them weight"
    fix = "set them to -inf (or a large negative number) before the softmax"

    def mask(self, scores: Scores) -> Scores:
        return scores.masked_fill(self.hidden(scores.shape[-1]), 0.0)


class NoMask(Attention):
    says = "there is no causal mask: every position sees the positions after it"
    fix = "hide sources after the destination: scores.masked_fill(ones(pos, pos).triu(1), -inf)"

    def mask(self, scores: Scores) -> Scores:
        return scores


class MaskHidesThePast(Attention):
    says = "the mask hides the sources before the destination instead of those after it"
    fix = "hide src > dest: ones(pos, pos).triu(diagonal=1), not tril"

    def hidden(self, pos: int) -> Tensor:
        return torch.ones(pos, pos, dtype=torch.bool).tril(-1)


class MaskLetsNextThrough(Attention):
    says = "the mask is off by one: each position also sees the next one"
    fix = "hide every src > dest: triu(diagonal=1)"

    def hidden(self, pos: int) -> Tensor:
        return torch.ones(pos, pos, dtype=torch.bool).triu(2)


class SoftmaxOverDestinations(Attention):
    says = "the softmax is taken over destinations (dim=-2), so columns sum to 1, not rows"
    fix = "take it over source positions, the key axis: softmax(dim=-1)"

    def softmax(self, scores: Scores) -> Scores:
        return scores.softmax(dim=-2)


class SoftmaxOverHeads(Attention):
    says = "the softmax is taken over heads (dim=1), not over source positions"
    fix = "each head's row of scores gets its own softmax over sources: softmax(dim=-1)"

    def softmax(self, scores: Scores) -> Scores:
        return scores.softmax(dim=1)


class PatternTransposed(Attention):
    says = "the pattern is applied transposed: z[src] sums pattern[dest, src] v[dest]"
    fix = "z[dest] = sum_src pattern[dest, src] v[src]: pattern @ v"

    def z(self, pattern: Scores, v: Heads) -> Heads:
        return pattern.transpose(-1, -2) @ v


class NotScaled(Attention):
    says = "the scores are not scaled"
    fix = "divide q k^T by sqrt(d_head)"

    def scores(self, q: Heads, k: Heads) -> Scores:
        return q @ k.transpose(-1, -2)


class ScaledByDHead(Attention):
    says = "the scores are divided by d_head"
    fix = "divide by sqrt(d_head)"

    def scores(self, q: Heads, k: Heads) -> Scores:
        return q @ k.transpose(-1, -2) / q.shape[-1]


class ScaledByDModel(Attention):
    says = "the scores are divided by sqrt(d_model)"
    fix = "divide by sqrt(d_head), the width of one head's q and k"

    def scores(self, q: Heads, k: Heads) -> Scores:
        return q @ k.transpose(-1, -2) / math.sqrt(self.w["W_Q"].shape[1])


class ScaledAfterSoftmax(Attention):
    says = "the pattern is divided by sqrt(d_head) after the softmax"
    fix = "scale the scores before it: softmax(q k^T / sqrt(d_head))"

    def scores(self, q: Heads, k: Heads) -> Scores:
        return q @ k.transpose(-1, -2)

    def softmax(self, scores: Scores) -> Scores:
        return scores.softmax(dim=-1) / math.sqrt(self.w["W_Q"].shape[-1])


class ScoresTransposed(Attention):
    says = "the scores are k q^T, so a destination is scored by its own key"
    fix = "scores[dest, src] = q_dest . k_src: q @ k.transpose(-1, -2)"

    def scores(self, q: Heads, k: Heads) -> Scores:
        return super().scores(k, q)


class HeadsAveraged(Attention):
    says = "the heads' outputs are averaged"
    fix = "out = sum_h z_h W_O[h] + b_O sums them"

    def out(self, z: Heads) -> Tensor:
        return torch.einsum("bhpd,hdm->bpm", z, self.w["W_O"]) / z.shape[1] + self.w["b_O"]


class HeadsMergedUntransposed(Attention):
    says = "z [batch, head, pos, d_head] is reshaped to [batch, pos, head * d_head] unpermuted"
    fix = "move head next to d_head first: z.transpose(1, 2).reshape(batch, pos, -1)"

    def out(self, z: Heads) -> Tensor:
        batch, head, pos, d_head = z.shape
        merged = z.reshape(batch, pos, head * d_head)
        return merged @ self.w["W_O"].reshape(head * d_head, -1) + self.w["b_O"]


class KeysAndValuesSwapped(Attention):
    says = "keys come from W_V and values from W_K: they are swapped"
    fix = "k = x W_K + b_K scores the sources, v = x W_V + b_V is what they send"

    def project(self, x: Tensor, name: str) -> Heads:
        return super().project(x, {"K": "V", "V": "K"}.get(name, name))


class NoValueBias(Attention):
    says = "b_V is never added"
    fix = "v = x W_V + b_V"

    def project(self, x: Tensor, name: str) -> Heads:
        v = super().project(x, name)
        return v - self.w["b_V"][:, None] if name == "V" else v


class NoQueryBias(Attention):
    says = "b_Q is never added"
    fix = "q = x W_Q + b_Q"

    def project(self, x: Tensor, name: str) -> Heads:
        q = super().project(x, name)
        return q - self.w["b_Q"][:, None] if name == "Q" else q


class NoOutputBias(Attention):
    says = "b_O is never added"
    fix = "out = sum_h z_h W_O[h] + b_O, once (not per head)"

    def out(self, z: Heads) -> Tensor:
        return super().out(z) - self.w["b_O"]


class OutputBiasPerHead(Attention):
    says = "b_O is added once per head"
    fix = "add it once, after summing the heads: sum_h z_h W_O[h] + b_O"

    def out(self, z: Heads) -> Tensor:
        return super().out(z) + (z.shape[1] - 1) * self.w["b_O"]


MISTAKES: list[type[Attention]] = [
    MaskAfterSoftmax,
    MaskedWithZero,
    NoMask,
    MaskHidesThePast,
    MaskLetsNextThrough,
    SoftmaxOverDestinations,
    SoftmaxOverHeads,
    PatternTransposed,
    NotScaled,
    ScaledByDHead,
    ScaledByDModel,
    ScaledAfterSoftmax,
    ScoresTransposed,
    HeadsAveraged,
    HeadsMergedUntransposed,
    KeysAndValuesSwapped,
    NoValueBias,
    NoQueryBias,
    NoOutputBias,
    OutputBiasPerHead,
]
