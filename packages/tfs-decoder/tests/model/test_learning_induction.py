"""Learning test: a two-layer attention-only transformer, composed from the tfs packages,
forms an induction head; one layer cannot do the task.

Induction (Olsson et al. 2022, "In-context Learning and Induction Heads"; Elhage et al.
2021, "A Mathematical Framework for Transformer Circuits", "Two-Layer Attention-Only
Transformers"): at a token A that occurred before, attend to the token that followed the
earlier A and copy it. It needs two layers composed: a layer-0 head writes "my previous
token" into each position, and a layer-1 head matches it against the current token.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import cross_entropy, run_with_cache
from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed

V = 32  # token values
L = 24  # sequence length
P_MIN, P_MAX = 8, 12  # repeat period, drawn per sequence
D_MODEL, N_HEADS = 64, 4
STEPS = 300
BATCH = 64
LR = 1e-2
EVAL_BATCH = 500


class AttentionOnly(nn.Module):
    """x_0 = W_E[tokens] + W_pos; x_{i+1} = x_i + attn_i(x_i); logits = x_n W_U + b_U.

    No MLPs and no LayerNorm: what it computes is attention composition and nothing else.
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.embed = Embed(V, D_MODEL)
        self.pos_embed = LearnedPositionalEmbedding(L, D_MODEL)
        self.layers = nn.ModuleList(MultiHeadAttention(D_MODEL, N_HEADS) for _ in range(n_layers))
        self.unembed = Unembed(D_MODEL, V)

    def residual(self, tokens: Tensor, n_layers: int) -> Tensor:
        """The residual stream after the first ``n_layers`` layers."""
        x: Tensor = self.embed(tokens) + self.pos_embed(tokens)
        for layer in self.layers[:n_layers]:
            x = x + layer(x)
        return x

    def forward(self, tokens: Tensor) -> Tensor:
        logits: Tensor = self.unembed(self.residual(tokens, len(self.layers)))
        return logits


def repeated_batch(g: torch.Generator, batch: int) -> tuple[Tensor, Tensor]:
    """Each sequence: a period P uniform in [P_MIN, P_MAX] and a block of P distinct random
    tokens, repeated to fill L positions. Distinct tokens make "the token after the previous
    occurrence" unique; a varying P stops attention by fixed offset from solving it."""
    period = torch.randint(P_MIN, P_MAX + 1, (batch,), generator=g)
    blocks = torch.rand(batch, V, generator=g).argsort(dim=-1)  # a random permutation each
    index = torch.arange(L)[None, :] % period[:, None]
    return blocks.gather(1, index), period


def repeated_part(period: Tensor) -> Tensor:
    """[batch, L - 1] mask of the predicting positions p >= P, whose token occurred at p - P,
    so their target tokens[p + 1] = tokens[p - P + 1] is determined."""
    return torch.arange(L - 1)[None, :] >= period[:, None]


def layer1_pattern(model: AttentionOnly, tokens: Tensor) -> Tensor:
    """Layer 1's attention pattern [batch, head, dest, src], read at its hook point."""
    _, cache = run_with_cache(model, tokens, names=["layers.1.hook_pattern"])
    return cache["layers.1.hook_pattern"]


def induction_scores(pattern: Tensor, period: Tensor) -> Tensor:
    """Per head: mean attention from destination p to source p - P + 1 (the token after the
    previous occurrence of the current token), over destinations p >= P."""
    batch, n_heads = pattern.shape[:2]
    dest = torch.arange(L)[None, :].expand(batch, L)
    src = (dest - period[:, None] + 1).clamp_min(0)
    repeated = dest >= period[:, None]
    to_src = pattern.gather(3, src[:, None, :, None].expand(batch, n_heads, L, 1)).squeeze(3)
    return (to_src * repeated[:, None, :]).sum(dim=(0, 2)) / repeated.sum()


@dataclass
class Result:
    accuracy: float  # on the repeated part
    scores: list[float]  # layer-1 induction score per head; empty for one layer


def train_induction(seed: int, n_layers: int = 2) -> Result:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AttentionOnly(n_layers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    for _ in range(STEPS):
        tokens, period = repeated_batch(g, BATCH)
        # Trained only where the next token is determined: the first block is pure noise
        # and (measured) makes the phase change to induction much later and less regular.
        losses = cross_entropy(model(tokens)[:, :-1], tokens[:, 1:])
        mask = repeated_part(period)
        loss = (losses * mask).sum() / mask.sum()
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()

    with torch.no_grad():
        tokens, period = repeated_batch(g, EVAL_BATCH)  # fresh sequences
        mask = repeated_part(period)
        correct = (model(tokens)[:, :-1].argmax(dim=-1) == tokens[:, 1:]) & mask
        accuracy = (correct.sum() / mask.sum()).item()
        scores = induction_scores(layer1_pattern(model, tokens), period) if n_layers > 1 else None
    return Result(accuracy, [] if scores is None else scores.tolist())


@pytest.mark.learning
def test_two_attention_layers_form_an_induction_head() -> None:
    """Task: sequences of L = 24 tokens, a block of P distinct tokens (of V = 32) repeated
    to fill them, P uniform in [8, 12] per sequence. Model: Embed + LearnedPositional-
    Embedding, two MultiHeadAttention layers (4 heads of 16, d_model 64) added to the
    residual stream, Unembed; no MLP, no LayerNorm. AdamW lr 1e-2, 300 steps of 64 fresh
    sequences, loss on the repeated part. Evaluated on 500 fresh sequences.

    Measured over seeds 0..15 (300 steps): accuracy on the repeated part 0.989..0.999; best
    layer-1 head's induction score 0.718..0.792 (most seeds have 3-4 heads above 0.6).
    Thresholds: accuracy >= 0.9 (margin 0.089), best induction score >= 0.5 (margin 0.22).
    With the loss on every position instead, 1 seed in 16 had not yet made the phase change
    by 300 steps. About 3 s on one thread, with the runtime type checker on.
    """
    result = train_induction(seed=0)
    assert result.accuracy >= 0.9
    assert len(result.scores) == N_HEADS
    assert max(result.scores) >= 0.5


@pytest.mark.learning
def test_one_attention_layer_cannot_do_induction() -> None:
    """Control: the same model with one layer, trained the same way. Without a previous-token
    head to compose with, it cannot find the token after the earlier occurrence.

    Measured over seeds 0..7: accuracy on the repeated part 0.302..0.333. That is above the
    1/V chance, because weak cues help: the next token is always the least recently seen one,
    and only 5 periods are possible. It is far below the two-layer model.
    Threshold: accuracy < 0.6 (margin 0.27). About 2 s on one thread.
    """
    result = train_induction(seed=0, n_layers=1)
    assert result.accuracy < 0.6
