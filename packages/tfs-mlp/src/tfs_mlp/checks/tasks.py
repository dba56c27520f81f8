"""The learning task of the MLP checks, and the package's learning test too: the parity of
three bits (:func:`parity_batch`, :func:`train_parity`), which no linear map can learn."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_core.checking import output

__all__ = ["parity_batch", "train_parity"]

# The parity task: tests/test_learning.py records its measurements and thresholds. The
# checks build the MLP at the task's width and length.
D_MODEL, POS = 8, 4
N_BITS, NOISE, BATCH, STEPS, LR = 3, 0.1, 16, 300, 0.03


def parity_batch(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """x ``[batch, 4, 8]`` with three ±1 bits in coordinates 0..2 plus Gaussian noise (std
    0.1) everywhere; y ``[batch, 4]``, the parity of the bits at each position."""
    bits = torch.randint(0, 2, (batch, POS, N_BITS), generator=generator)
    x = NOISE * torch.randn(batch, POS, D_MODEL, generator=generator)
    x[..., :N_BITS] += 2.0 * bits.float() - 1.0
    return x, (bits.sum(dim=-1) % 2).float()


def train_parity(make_mlp: Callable[[], nn.Module] | None, seed: int) -> tuple[float, float]:
    """Train ``make_mlp()`` (built for d_model 8) on :func:`parity_batch`, reading the first
    coordinate of its output as a logit (Adam lr 0.03, 300 steps of 16 sequences); return
    (accuracy, loss) on 256 fresh sequences. ``None`` is the control: a linear map
    ``x W + b`` in its place."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if make_mlp is not None:
        mlp = make_mlp()
        params = list(mlp.parameters())

        def readout(x: Tensor) -> Tensor:
            return output(mlp(x))[..., 0]

    else:
        W = nn.Parameter(0.02 * torch.randn(D_MODEL, 1))
        b = nn.Parameter(torch.zeros(1))
        params = [W, b]

        def readout(x: Tensor) -> Tensor:
            return (x @ W + b)[..., 0]

    opt = torch.optim.Adam(params, lr=LR)
    for _ in range(STEPS):
        x, y = parity_batch(BATCH, generator)
        loss = F.binary_cross_entropy_with_logits(readout(x), y)
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
    x, y = parity_batch(256, generator)
    with torch.no_grad():
        logits = readout(x)
        accuracy = ((logits > 0).float() == y).float().mean().item()
        eval_loss = F.binary_cross_entropy_with_logits(logits, y).item()
    return accuracy, eval_loss
