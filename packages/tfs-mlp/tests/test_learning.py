"""The MLP alone learns a map no linear layer can: the parity of three bits.

Task: each position of x ``[batch, pos=4, d_model=8]`` carries three random bits as ±1 in
coordinates 0..2 and Gaussian noise (std 0.1) everywhere (coordinates 3..7 are pure
distractors). The label is the parity of the three bits. The readout is the first coordinate
of the MLP's output, used as a logit with binary cross-entropy. A linear map ``x @ W + b``
cannot represent parity: the bits are uncorrelated with the label, so logistic regression
is pulled towards ``W = 0`` (loss ln 2 ≈ 0.693), and even the best linear classifier of
3-bit parity is right on only 6 of the 8 patterns (75%).

Training (both models): Adam, lr 0.03, 300 steps, 16 sequences x 4 positions per step, data
drawn from a torch.Generator seeded with the seed; evaluation on 256 x 4 fresh positions.
Model: MLP(d_model=8, d_mlp=32, "gelu") with its default GPT-2 init (std 0.02).

Measured with a throwaway script over seeds 0..19 (runtime type checking on):
  MLP:     accuracy 1.000 on every seed; eval loss 0.0004 .. 0.0024.
           (At 150 steps some seeds were still at chance, at 200 all but one had converged:
           300 steps is a 2x margin on training length.)
  control: accuracy 0.29 .. 0.66 (0.45 .. 0.74 at 400 steps); eval loss 0.692 .. 0.700.
Thresholds: MLP accuracy >= 0.99 and eval loss < 0.05 (20x the worst measured loss);
control eval loss > 0.68 (measured minimum 0.692, chance 0.693) and accuracy < 0.80 (the
theoretical best for a linear classifier is 0.75 on noise-free bits).
The tests run seed 0. About 0.5 s (MLP) and 0.1 s (control) with one torch thread.
The task and the training are tfs_mlp.checks.tasks.parity_batch and train_parity (the same
task is the learning check of `check_mlp`).
"""

from __future__ import annotations

import pytest

from tfs_mlp import MLP
from tfs_mlp.checks.mlp import D_MLP
from tfs_mlp.checks.tasks import D_MODEL, train_parity

SEED = 0


@pytest.mark.learning
def test_mlp_learns_three_bit_parity() -> None:
    accuracy, eval_loss = train_parity(lambda: MLP(D_MODEL, D_MLP, "gelu"), SEED)
    assert accuracy >= 0.99, f"accuracy {accuracy:.3f}"
    assert eval_loss < 0.05, f"eval loss {eval_loss:.4f}"


@pytest.mark.learning
def test_linear_control_stays_at_chance_on_parity() -> None:
    accuracy, eval_loss = train_parity(None, SEED)
    assert eval_loss > 0.68, f"eval loss {eval_loss:.4f}"
    assert accuracy < 0.80, f"accuracy {accuracy:.3f}"
