"""The original "Attention Is All You Need" block: post-LayerNorm, ReLU, sinusoidal positions.

Vaswani et al. (2017), section 3.1, wrap each sublayer as ``LayerNorm(x + Sublayer(x))``::

    x = LN(x + attn(x))        # then
    x = LN(x + mlp(x))         # mlp(x) = max(0, x W_1 + b_1) W_2 + b_2   (section 3.3)

with the fixed sinusoidal positional encoding of section 3.5 added to the token embedding,
which is multiplied by ``sqrt(d_model)`` (section 3.4). GPT-2 and ``tfs_decoder.Decoder``
moved the LayerNorm to the sublayer's input instead (pre-LN); here the same components,
``MultiHeadAttention``, ``MLP(activation="relu")`` and ``LayerNorm``, are put together the
original way in a few lines, which is what composition from parts is for.

Task (as in minGPT's sorting demo): a sequence of ``N`` random digits followed by the same
digits sorted; a causal model trained on next-token prediction learns to write the sorted
half. Since every teacher-forced prediction of the sorted half is right exactly when greedy
decoding writes the whole sorted half correctly, the share of sequences whose sorted half is
entirely right is also the share that greedy generation sorts.

Run it: ``python examples/post_ln_transformer.py [--seed 0] [--steps 250]``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import LayerNorm, cross_entropy
from tfs_embeddings import Embed, SinusoidalPositionalEncoding, Unembed
from tfs_mlp import MLP

N = 6  # digits to sort
D_VOCAB = 6  # digit values 0..5
POS = 2 * N
D_MODEL, N_HEADS, D_MLP, N_LAYERS = 32, 4, 64, 2
BATCH, LR, WARMUP = 64, 5e-3, 50
EVAL_BATCH = 1000


class PostLNBlock(nn.Module):
    """``x = LN_1(x + attn(x)); x = LN_2(x + mlp(x))`` (Vaswani et al. 2017, section 3.1).

    Shapes:
        x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(self, d_model: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, n_heads)  # causal, as in the paper's decoder
        self.ln1 = LayerNorm(d_model)
        self.mlp = MLP(d_model, d_mlp, activation="relu")
        self.ln2 = LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln1(x + self.attn(x))
        out: Tensor = self.ln2(x + self.mlp(x))
        return out


class PostLNTransformer(nn.Module):
    """``x_0 = sqrt(d_model) W_E[tokens] + PE``, ``N_LAYERS`` post-LN blocks, ``x_n W_U + b_U``.

    No final LayerNorm: in the post-LN arrangement every block already ends with one.

    Shapes:
        tokens ``[batch, pos]`` -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self) -> None:
        super().__init__()
        # Unit-variance rows once multiplied by sqrt(d_model), comparable to the sinusoids.
        self.embed = Embed(D_VOCAB, D_MODEL, init_std=D_MODEL**-0.5)
        self.pos_embed = SinusoidalPositionalEncoding(POS, D_MODEL)
        self.blocks = nn.ModuleList(PostLNBlock(D_MODEL, N_HEADS, D_MLP) for _ in range(N_LAYERS))
        self.unembed = Unembed(D_MODEL, D_VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        x = math.sqrt(D_MODEL) * self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.unembed(x)
        return logits


def make_batch(g: torch.Generator, batch: int) -> Tensor:
    """``[batch, 2N]``: ``N`` random digits, then the same digits sorted."""
    digits = torch.randint(0, D_VOCAB, (batch, N), generator=g)
    return torch.cat([digits, digits.sort(dim=-1).values], dim=1)


def sorted_half_loss(model: nn.Module, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position loss ``[batch, N]`` and predictions ``[batch, N]`` of the sorted half:
    positions ``N - 1 .. 2N - 2`` predict tokens ``N .. 2N - 1``."""
    logits = model(tokens)[:, N - 1 : -1]
    targets = tokens[:, N:]
    return cross_entropy(logits, targets), logits.argmax(dim=-1)


@dataclass
class Result:
    token_accuracy: float  # share of sorted-half tokens predicted right, fresh sequences
    sequence_accuracy: float  # share of fresh sequences whose sorted half is all right
    first_loss: float
    final_loss: float


def main(seed: int = 0, steps: int = 250) -> Result:
    """Train for ``steps`` steps on fresh batches, then evaluate on fresh sequences."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = PostLNTransformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    # A linear warm-up, as in the paper's schedule (5.3): post-LN is sensitive to large early
    # steps (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture").
    # Measured over seeds 0..7: worst token accuracy 0.988 with it, 0.945 without.
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP)
    )
    losses = []
    for _ in range(steps):
        loss = sorted_half_loss(model, make_batch(g, BATCH))[0].mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        warmup.step()
        losses.append(loss.item())

    with torch.no_grad():
        tokens = make_batch(g, EVAL_BATCH)
        correct = sorted_half_loss(model, tokens)[1] == tokens[:, N:]
    return Result(
        token_accuracy=correct.float().mean().item(),
        sequence_accuracy=correct.all(dim=1).float().mean().item(),
        first_loss=losses[0] if losses else float("nan"),
        final_loss=losses[-1] if losses else float("nan"),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args()
    result = main(args.seed, args.steps)
    print(f"loss on the sorted half: {result.first_loss:.3f} -> {result.final_loss:.3f}")
    print(f"sorted-half tokens right: {result.token_accuracy:.3f}")
    print(f"sequences sorted right:   {result.sequence_accuracy:.3f}")
