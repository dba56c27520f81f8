"""The learning task of the decoder checks, and the package's learning test too: sequence
reversal (:func:`train_reversal`). A decoder learns to reverse its input, and stays at
chance where nothing can be predicted. tfs's learning test and ``check_decoder`` both train
on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_core.checking import output
from tfs_decoder.config import DecoderConfig
from tfs_decoder.loss import cross_entropy

V = 10  # token values; BOS is the extra id V, so d_vocab = V + 1
N = 5  # sequence [BOS, a_1..a_n, a_n..a_1] has 2n + 1 positions
STEPS = 150
BATCH = 64
LR = 3e-3
EVAL_BATCH = 2000
# What a model that has learned reversal, and sees no future tokens, scores (measured
# ranges and seeds: tests/model/test_learning_reversal.py).
SECOND_HALF_ACCURACY = 0.99  # at least
FIRST_HALF_TOLERANCE = 4 * math.sqrt((1 / V) * (1 - 1 / V) / (EVAL_BATCH * N))  # |acc - 1/V|
LOSS_FLOOR = 0.5 * math.log(V)  # nats: the first half at chance, the second half exact
LOSS_TOLERANCE = 0.05  # |loss - LOSS_FLOOR|
CONFIG = DecoderConfig(
    d_vocab=V + 1, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_layers=2, n_ctx=2 * N + 1
)


def reversal_batch(g: torch.Generator, batch: int) -> Tensor:
    """[BOS, a_1, ..., a_n, a_n, ..., a_1], each a_i uniform over the V values."""
    a = torch.randint(0, V, (batch, N), generator=g)
    bos = torch.full((batch, 1), V, dtype=torch.long)
    return torch.cat([bos, a, a.flip(1)], dim=1)


@dataclass
class ReversalResult:
    loss: float  # mean over all 2n predictions, nats
    first_half_accuracy: float  # predictions of a_1..a_n: unpredictable
    second_half_accuracy: float  # predictions of a_n..a_1: determined by the first half


def train_reversal(make_model: Callable[[DecoderConfig], nn.Module], seed: int) -> ReversalResult:
    """Train ``make_model(CONFIG)`` (2 layers, d_model 64, 4 heads of 16, d_mlp 256, d_vocab
    11, n_ctx 11) with AdamW lr 3e-3 for 150 steps of 64 fresh sequences; evaluate on 2000
    fresh sequences. The model maps tokens ``[batch, pos]`` to logits ``[batch, pos,
    d_vocab]``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_model(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    for _ in range(STEPS):
        tokens = reversal_batch(g, BATCH)
        # Positions 0..2n-1 predict tokens 1..2n; the last position has no target.
        loss = cross_entropy(output(model(tokens))[:, :-1], tokens[:, 1:]).mean()
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()

    model.eval()
    with torch.no_grad():
        tokens = reversal_batch(g, EVAL_BATCH)  # fresh sequences, never trained on
        logits = output(model(tokens))[:, :-1]
        targets = tokens[:, 1:]
        correct = (logits.argmax(dim=-1) == targets).float()
        return ReversalResult(
            loss=cross_entropy(logits, targets).mean().item(),
            first_half_accuracy=correct[:, :N].mean().item(),
            second_half_accuracy=correct[:, N:].mean().item(),
        )
