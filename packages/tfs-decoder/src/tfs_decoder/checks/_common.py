"""What the decoder package's checks share besides the runner: tfs's parameter shapes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def parameter_shapes(make: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the parameters of ``make()``; the global generator is kept."""
    with torch.random.fork_rng(devices=[]):
        return {name: tuple(p.shape) for name, p in make().named_parameters()}
