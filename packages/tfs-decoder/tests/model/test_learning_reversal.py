"""Learning test: the full Decoder learns to reverse a sequence, and stays at chance where
nothing can be predicted (a causal mask that leaked the future would not).
"""

from __future__ import annotations

import pytest

from tfs_decoder import Decoder
from tfs_decoder.checks.tasks import (
    FIRST_HALF_TOLERANCE,
    LOSS_FLOOR,
    LOSS_TOLERANCE,
    SECOND_HALF_ACCURACY,
    train_reversal,
)


@pytest.mark.learning
def test_decoder_learns_sequence_reversal() -> None:
    """Task: sequences [BOS, a_1..a_n, a_n..a_1], a_i uniform over V = 10 values, n = 5
    (length 11, d_vocab 11). The 2n targets split in two: a_1..a_n cannot be predicted
    (chance is 1/V and the best loss ln V); a_n..a_1 are determined (loss 0). So a model
    that has learned reversal, and sees no future tokens, has
      - second-half accuracy 1,
      - first-half accuracy 1/V (a leaky causal mask would lift this above chance),
      - mean loss 0.5 ln V = 1.151 nats, the analytic floor.

    Decoder with 2 layers, d_model 64, 4 heads of 16, d_mlp 256; AdamW lr 3e-3, 150 steps of
    64 fresh sequences; evaluated on 2000 fresh sequences (10000 first-half predictions).

    Measured over seeds 0..9 (150 steps): second-half accuracy 1.000 on every seed;
    first-half accuracy 0.0960..0.1042; loss - 0.5 ln V from +0.005 to +0.021.
    Thresholds: second-half accuracy >= 0.99; |first-half accuracy - 0.1| <= 0.012
    (4 binomial standard errors, sqrt(0.1 * 0.9 / 10000) = 0.003); |loss - 0.5 ln V| <= 0.05
    (2.4x the worst measured excess). About 3 s on one thread, with the runtime type checker.
    The task and its training live in tfs_decoder.checks.tasks: check_decoder's learning
    check trains a learner's decoder on it with these thresholds.
    """
    result = train_reversal(Decoder, seed=0)
    assert result.second_half_accuracy >= SECOND_HALF_ACCURACY  # 0.99
    assert abs(result.first_half_accuracy - 0.1) <= FIRST_HALF_TOLERANCE  # 0.012
    assert abs(result.loss - LOSS_FLOOR) <= LOSS_TOLERANCE  # 0.5 ln 10 = 1.151; 0.05
