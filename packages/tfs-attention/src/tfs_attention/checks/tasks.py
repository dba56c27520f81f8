"""The learning task of the attention checks, and the package's learning test too: fetch
the flagged value (:func:`fetch_batch`, :func:`fetch_accuracy`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_core.checking import output

__all__ = ["fetch_accuracy", "fetch_batch"]


def fetch_batch(gen: torch.Generator, n: int) -> tuple[Tensor, Tensor]:
    """The "fetch the flagged value" task: ``n`` sequences of 8 one-hot values (features
    0-7) with a flag bit (feature 8) on one of the first 7 positions; the target is the
    flagged value, read at the last position. Inputs ``[n, 8, 16]``, targets ``[n]``."""
    values = torch.randint(0, 8, (n, 8), generator=gen)
    flagged = torch.randint(0, 7, (n,), generator=gen)
    x = torch.zeros(n, 8, 16)
    x[..., :8] = F.one_hot(values, 8).float()
    rows = torch.arange(n)
    x[rows, flagged, 8] = 1.0
    return x, values[rows, flagged]


def fetch_accuracy(make_attention: Callable[[], nn.Module] | None, seed: int) -> float:
    """Train ``make_attention()`` (d_model 16, 2 heads, causal) and a readout matrix on the
    task of :func:`fetch_batch` (Adam lr 3e-2, 80 steps of 64); the accuracy on 2,048
    fresh sequences. ``None`` is the control: the readout sees only the last position."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    attn = make_attention() if make_attention is not None else None
    readout = nn.Parameter(torch.randn(16, 8) * 0.02)
    params = [readout, *(attn.parameters() if attn is not None else [])]
    optimizer = torch.optim.Adam(params, lr=3e-2)

    def logits(x: Tensor) -> Tensor:
        last = output(attn(x))[:, -1] if attn is not None else x[:, -1]
        return last @ readout

    for _ in range(80):
        x, y = fetch_batch(gen, 64)
        loss = F.cross_entropy(logits(x), y)
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    with torch.no_grad():
        x, y = fetch_batch(torch.Generator().manual_seed(seed + 10_000), 2048)
        return float((logits(x).argmax(dim=-1) == y).float().mean())
