"""Learning test: one MultiHeadAttention layer moves information between positions.

Task ("fetch the flagged value"): a sequence of 8 random value tokens in [0, 8);
one position among the first 7 carries a flag. The answer, read at the LAST
position, is the value at the flagged position. The answer is independent of the last
position's own input, so nothing that only looks at the last position can beat chance
(1/8); one attention head that looks for the flag and copies its value solves it.
Inputs are built by tfs_attention.checks.tasks.fetch_batch (the same task is the learning
check of `check_attention`): each position is one_hot(value) in features [0, 8) plus a
flag bit in feature 8. No positional information is needed: which position is flagged is
carried by the flag bit itself.
"""

from __future__ import annotations

import pytest

from tfs_attention import MultiHeadAttention
from tfs_attention.checks import fetch_accuracy


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
    with_attention = fetch_accuracy(lambda: MultiHeadAttention(d_model=16, n_heads=2), seed)
    control = fetch_accuracy(None, seed)
    assert with_attention >= 0.95, f"attention accuracy {with_attention:.3f}"
    assert control <= 0.20, f"control accuracy {control:.3f} (chance 0.125)"
