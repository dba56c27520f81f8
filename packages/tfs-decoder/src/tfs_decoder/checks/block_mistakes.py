"""Mistakes learners make in the residual block, each written as tfs's formula with one
step wrong: :func:`~tfs_decoder.checks.check_block` names the one a learner's class
computes. They are mistakes of order and wiring; the sublayers are tfs's."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from tfs_attention.checks.attention_mistakes import Attention
from tfs_core.checking import Formula
from tfs_decoder.layernorm import layer_norm_formula
from tfs_mlp.activations import gelu_formula

EPS = 1e-5


def part(weights: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The weights under ``prefix.``, named as that sub-module names them."""
    return {
        k.removeprefix(f"{prefix}."): v for k, v in weights.items() if k.startswith(f"{prefix}.")
    }


class Block(Formula):
    """GPT-2's pre-LayerNorm block: ``resid_mid = x + attn(ln1(x))``, ``resid_post =
    resid_mid + mlp(ln2(resid_mid))`` (Radford et al., 2019, section 2.3)."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        mid = x + self.attn(self.ln(x, "ln1"))
        return mid + self.mlp(self.ln(mid, "ln2"))

    def ln(self, x: Tensor, name: str) -> Tensor:
        return layer_norm_formula(x, self.w[f"{name}.w"], self.w[f"{name}.b"], EPS)

    def attn(self, x: Tensor) -> Tensor:
        return Attention(part(self.w, "attn"))(x)

    def mlp(self, x: Tensor) -> Tensor:
        w = part(self.w, "mlp")
        return gelu_formula(x @ w["W_in"] + w["b_in"]) @ w["W_out"] + w["b_out"]


class PostLayerNorm(Block):
    says = "the LayerNorms are applied after each residual sum (post-LN, as the 2017 paper)"
    fix = "GPT-2 normalises what each sublayer reads: x + attn(ln1(x)), then mid + mlp(ln2(mid))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        mid = self.ln(x + self.attn(x), "ln1")
        return self.ln(mid + self.mlp(mid), "ln2")


class NoAttentionResidual(Block):
    says = "the attention's output replaces the residual stream instead of adding to it"
    fix = "resid_mid = x + attn(ln1(x))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        mid = self.attn(self.ln(x, "ln1"))
        return mid + self.mlp(self.ln(mid, "ln2"))


class NoMLPResidual(Block):
    says = "the MLP's output replaces the residual stream instead of adding to it"
    fix = "resid_post = resid_mid + mlp(ln2(resid_mid))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return self.mlp(self.ln(x + self.attn(self.ln(x, "ln1")), "ln2"))


class NormalisedStream(Block):
    says = "the normalised input joins the residual stream: ln1(x) + attn(ln1(x))"
    fix = "add the sublayer's output to x itself, un-normalised: x + attn(ln1(x))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        normalised = self.ln(x, "ln1")
        mid = normalised + self.attn(normalised)
        return mid + self.mlp(self.ln(mid, "ln2"))


class Parallel(Block):
    says = "the MLP reads the block's input, not resid_mid (attention and MLP in parallel)"
    fix = "run them in turn: the MLP reads ln2(x + attn(ln1(x)))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        return x + self.attn(self.ln(x, "ln1")) + self.mlp(self.ln(x, "ln2"))


class MLPFirst(Block):
    says = "the MLP runs before the attention"
    fix = "attention first, then the MLP: mid = x + attn(ln1(x)); out = mid + mlp(ln2(mid))"

    def __call__(self, *inputs: Tensor) -> Tensor:
        (x,) = inputs
        mid = x + self.mlp(self.ln(x, "ln2"))
        return mid + self.attn(self.ln(mid, "ln1"))


class OneLayerNorm(Block):
    says = "the MLP reads ln1, the attention's LayerNorm, instead of its own ln2"
    fix = "each sublayer has its own LayerNorm: mlp(ln2(resid_mid))"

    def ln(self, x: Tensor, name: str) -> Tensor:
        return super().ln(x, "ln1")


MISTAKES: list[type[Block]] = [
    PostLayerNorm,
    NoAttentionResidual,
    NoMLPResidual,
    NormalisedStream,
    Parallel,
    MLPFirst,
    OneLayerNorm,
]
