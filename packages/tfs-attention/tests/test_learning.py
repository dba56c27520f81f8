"""Learning test: one MultiHeadAttention layer moves information between positions.

Task ("fetch the flagged value"): a sequence of N_POS random value tokens in [0, N_VALUES);
one position among the first N_POS - 1 carries a flag. The answer, read at the LAST
position, is the value at the flagged position. The answer is independent of the last
position's own input, so nothing that only looks at the last position can beat chance
(1 / N_VALUES); one attention head that looks for the flag and copies its value solves it.
Inputs are built here: each position is one_hot(value) in features [0, N_VALUES) plus a flag
bit in feature N_VALUES. No positional information is needed: which position is flagged is
carried by the flag bit itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention

N_VALUES = 8
N_POS = 8
D_MODEL = 16  # one-hot value (8) + flag (1) + unused features
N_HEADS = 2
STEPS = 80
BATCH = 64
LR = 3e-2
N_EVAL = 2048


def _fetch_batch(gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
    """Inputs [n, N_POS, D_MODEL] and targets [n]: the value at the flagged position."""
    values = torch.randint(0, N_VALUES, (n, N_POS), generator=gen)
    flagged = torch.randint(0, N_POS - 1, (n,), generator=gen)  # never the last position
    x = torch.zeros(n, N_POS, D_MODEL)
    x[..., :N_VALUES] = F.one_hot(values, N_VALUES).float()
    rows = torch.arange(n)
    x[rows, flagged, N_VALUES] = 1.0
    return x, values[rows, flagged]


def _train_and_evaluate(seed: int, use_attention: bool) -> float:
    """Train (attention +) a readout matrix on the task; return accuracy on fresh data.

    With ``use_attention=False`` the attention layer is replaced by the identity, so the
    readout sees only the last position's own input: the control that cannot move
    information between positions.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    attn = MultiHeadAttention(d_model=D_MODEL, n_heads=N_HEADS, causal=True)
    readout = nn.Parameter(torch.randn(D_MODEL, N_VALUES) * 0.02)
    params = [readout, *attn.parameters()] if use_attention else [readout]
    optimizer = torch.optim.Adam(params, lr=LR)

    def logits(x: Tensor) -> Tensor:
        # Causal attention: the last position can see every position.
        last = attn(x)[:, -1] if use_attention else x[:, -1]
        return last @ readout

    for _ in range(STEPS):
        x, y = _fetch_batch(gen, BATCH)
        loss = F.cross_entropy(logits(x), y)
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()

    eval_gen = torch.Generator().manual_seed(seed + 10_000)
    with torch.no_grad():
        x, y = _fetch_batch(eval_gen, N_EVAL)
        return (logits(x).argmax(dim=-1) == y).float().mean().item()


@pytest.mark.learning
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_fetches_flagged_value_and_control_stays_at_chance(seed: int) -> None:
    """One attention layer + readout learns the task; the identity control stays at chance.

    Setup: 8 values, 8 positions, d_model 16, 2 heads, causal, default init (std 0.02),
    Adam lr 3e-2, 80 steps of batch 64, accuracy on 2048 fresh sequences.
    Measured over seeds 0..9 (runtime type checking on, one thread):
      attention: accuracy 1.000 for every seed (all 10 seeds are already >= 0.76 at 30
        steps and 1.000 at 40, so 80 steps is 2x margin in steps);
      control (attention replaced by identity): 0.117..0.142, chance = 0.125.
    Thresholds: attention >= 0.95; control <= 0.20 (10 standard errors of a 2048-sample
    accuracy above chance, 0.058 above the highest control measured).
    This test runs seeds 0 and 1 (about 0.2 s each on one thread).
    """
    with_attention = _train_and_evaluate(seed, use_attention=True)
    control = _train_and_evaluate(seed, use_attention=False)
    assert with_attention >= 0.95, f"attention accuracy {with_attention:.3f}"
    assert control <= 0.20, f"control accuracy {control:.3f} (chance {1 / N_VALUES:.3f})"
