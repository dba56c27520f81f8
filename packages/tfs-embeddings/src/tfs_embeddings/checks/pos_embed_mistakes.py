"""Mistakes learners make in the learned positional embedding, each written as tfs's formula
with one step wrong: :func:`~tfs_embeddings.checks.check_pos_embed` names the one a learner's
class computes. They are slips of picking the rows: by token id instead of position, counted
from 1, from the end, reversed, or with Vaswani's sinusoids added on top.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from tfs_core.checking import Formula
from tfs_embeddings.positional import sinusoid_table

Table = Float[Tensor, "pos d_model"]


class PosEmbed(Formula):
    """tfs's learned positional embedding (no offset): ``pos_embed[b, p] = W_pos[p]`` for
    every sequence ``b``; the token ids give only the shape."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (tokens,) = inputs
        return self.table(tokens.shape[1]).expand(*tokens.shape, -1)

    def table(self, pos: int) -> Table:
        return self.w["W_pos"][:pos]


class RowsByTokenId(PosEmbed):
    says = "the rows of W_pos are picked by the token ids, W_pos[tokens], not by the positions"
    fix = "position p gets W_pos[p] whatever the token there: W_pos[:pos], broadcast over batch"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (tokens,) = inputs
        return self.w["W_pos"][tokens]


class PositionsFromOne(PosEmbed):
    says = "positions are counted from 1: position p gets row p + 1, W_pos[1:pos + 1]"
    fix = "positions count from 0: W_pos[:pos]"

    def table(self, pos: int) -> Table:
        return self.w["W_pos"][1 : pos + 1]


class LastRows(PosEmbed):
    says = "the last pos rows of W_pos are taken, W_pos[-pos:], not the first"
    fix = "position p gets row p: W_pos[:pos]"

    def table(self, pos: int) -> Table:
        return self.w["W_pos"][-pos:]


class PositionsReversed(PosEmbed):
    says = "the positions are reversed: position p gets row pos - 1 - p"
    fix = "position p gets row p: W_pos[:pos], not flipped"

    def table(self, pos: int) -> Table:
        return self.w["W_pos"][:pos].flip(0)


class SinusoidsAdded(PosEmbed):
    says = "the sinusoidal encoding is added to the learned rows: W_pos[p] + PE[p]"
    fix = "a learned positional embedding is W_pos[p] alone (GPT-2 has no sinusoids)"

    def table(self, pos: int) -> Table:
        rows = super().table(pos)
        return rows + sinusoid_table(*rows.shape).to(rows.dtype)


MISTAKES: list[type[PosEmbed]] = [
    RowsByTokenId,
    PositionsFromOne,
    LastRows,
    PositionsReversed,
    SinusoidsAdded,
]
