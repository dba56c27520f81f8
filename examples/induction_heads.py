"""Induction heads in a two-layer attention-only transformer.

The model of Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits",
section "Two-Layer Attention-Only Transformers": token and position embeddings, two
attention layers that add to the residual stream, and the unembedding; no MLP and no
LayerNorm, so everything it computes is attention and the composition of attention heads.

Trained on sequences that repeat a random block of tokens, it forms an induction head
(Olsson et al. 2022, "In-context Learning and Induction Heads"): at a token that occurred
before, a layer-1 head attends to the token that *followed* the earlier occurrence and
copies it. It can only find that token by K-composition with a layer-0 "previous token"
head, which writes "the token before me was X" into each position.

Both heads are read off the attention patterns through the hook point
``attn.hook_pattern`` ``[batch, head, dest, src]`` with ``tfs_decoder.run_with_cache``,
which works on any module that has ``hook_*`` submodules, not only on ``Decoder``:

- previous-token score of a layer-0 head: mean attention from position ``p`` to ``p - 1``;
- induction score of a layer-1 head: mean attention from a position ``p`` in the repeat
  to ``p - P + 1``, the position after the earlier occurrence of the same token.

Run it: ``python examples/induction_heads.py [--seed 0] [--steps 300]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import cross_entropy, run_with_cache
from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed

D_VOCAB = 32
POS = 24  # sequence length
P_MIN, P_MAX = 8, 12  # the repeated block's length P, drawn per sequence
D_MODEL, N_HEADS, N_LAYERS = 64, 4, 2
BATCH, LR = 64, 1e-2
EVAL_BATCH = 500


class AttentionOnly(nn.Module):
    """``x_0 = W_E[tokens] + W_pos``, ``x_{i+1} = x_i + attn_i(x_i)``, ``logits = x_n W_U + b_U``.

    The hook points of layer ``i`` are named ``blocks.{i}.hook_pattern`` and so on.

    Shapes:
        tokens ``[batch, pos]`` -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self, n_layers: int = N_LAYERS) -> None:
        super().__init__()
        self.embed = Embed(D_VOCAB, D_MODEL)
        self.pos_embed = LearnedPositionalEmbedding(POS, D_MODEL)
        self.blocks = nn.ModuleList(MultiHeadAttention(D_MODEL, N_HEADS) for _ in range(n_layers))
        self.unembed = Unembed(D_MODEL, D_VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        x: Tensor = self.embed(tokens) + self.pos_embed(tokens)
        for attn in self.blocks:
            x = x + attn(x)
        logits: Tensor = self.unembed(x)
        return logits


def repeated_batch(g: torch.Generator, batch: int) -> tuple[Tensor, Tensor]:
    """Sequences of ``POS`` tokens: a block of ``P`` distinct random tokens repeated, ``P``
    uniform in ``[P_MIN, P_MAX]`` per sequence. Distinct tokens make "the token after the
    earlier occurrence" unique; a varying ``P`` rules out attending by a fixed offset.
    Returns tokens ``[batch, pos]`` and the periods ``[batch]``."""
    period = torch.randint(P_MIN, P_MAX + 1, (batch,), generator=g)
    blocks = torch.rand(batch, D_VOCAB, generator=g).argsort(dim=-1)  # a permutation each
    return blocks.gather(1, torch.arange(POS)[None, :] % period[:, None]), period


def repeat_mask(period: Tensor) -> Tensor:
    """``[batch, pos]``: True at the positions ``p >= P`` of the repeat, whose next token
    ``tokens[p + 1] = tokens[p - P + 1]`` is determined by the context."""
    return torch.arange(POS)[None, :] >= period[:, None]


def induction_scores(pattern: Tensor, period: Tensor) -> Tensor:
    """Per head: mean attention from ``p`` to ``p - P + 1`` over the repeat ``p >= P``.

    Shapes: pattern ``[batch, head, dest, src]``, period ``[batch]`` -> ``[head]``."""
    batch, n_heads = pattern.shape[:2]
    dest = torch.arange(POS).expand(batch, POS)
    src = (dest - period[:, None] + 1).clamp_min(0)
    to_src = pattern.gather(3, src[:, None, :, None].expand(batch, n_heads, POS, 1))[..., 0]
    mask = repeat_mask(period)[:, None, :]
    return (to_src * mask).sum(dim=(0, 2)) / mask.sum()


def previous_token_scores(pattern: Tensor) -> Tensor:
    """Per head: mean attention from ``p`` to ``p - 1`` over ``p >= 1``.

    Shapes: pattern ``[batch, head, dest, src]`` -> ``[head]``."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))


@dataclass
class Result:
    accuracy: float  # next-token accuracy on the repeat, fresh sequences
    induction_scores: list[float]  # per layer-1 head
    previous_token_scores: list[float]  # per layer-0 head
    first_loss: float
    final_loss: float


def main(seed: int = 0, steps: int = 300) -> Result:
    """Train for ``steps`` steps, then measure accuracy and both heads' scores."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AttentionOnly()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        tokens, period = repeated_batch(g, BATCH)
        # Only the repeat has a determined next token; the first block is noise.
        mask = repeat_mask(period)[:, :-1]
        per_position = cross_entropy(model(tokens)[:, :-1], tokens[:, 1:])
        loss = (per_position * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())

    with torch.no_grad():
        tokens, period = repeated_batch(g, EVAL_BATCH)  # fresh sequences
        logits, cache = run_with_cache(
            model, tokens, names=["blocks.0.hook_pattern", "blocks.1.hook_pattern"]
        )
        mask = repeat_mask(period)[:, :-1]
        correct = (logits[:, :-1].argmax(dim=-1) == tokens[:, 1:]) & mask
        return Result(
            accuracy=(correct.sum() / mask.sum()).item(),
            induction_scores=induction_scores(cache["blocks.1.hook_pattern"], period).tolist(),
            previous_token_scores=previous_token_scores(cache["blocks.0.hook_pattern"]).tolist(),
            first_loss=losses[0] if losses else float("nan"),
            final_loss=losses[-1] if losses else float("nan"),
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    result = main(args.seed, args.steps)
    print(f"loss on the repeat: {result.first_loss:.3f} -> {result.final_loss:.3f}")
    print(f"accuracy on the repeat: {result.accuracy:.3f} (chance: {1 / D_VOCAB:.3f})")
    for name, scores in [
        ("layer-0 previous-token scores", result.previous_token_scores),
        ("layer-1 induction scores", result.induction_scores),
    ]:
        print(f"{name}: " + " ".join(f"{s:.2f}" for s in scores))
