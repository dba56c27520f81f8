"""What the decoder package's checks share: tfs's parameter shapes and random weights."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn


def parameter_shapes(make: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the parameters of ``make()``; the global generator is kept."""
    with torch.random.fork_rng(devices=[]):
        return {name: tuple(p.shape) for name, p in make().named_parameters()}


def random_weights(
    params: Mapping[str, tuple[int, ...]], seed: int, std: float = 0.25
) -> dict[str, Tensor]:
    """Random values for every parameter; LayerNorm gains (named ``w``) scattered around 1,
    so that normalised values keep their size."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in params.items():
        noise = torch.randn(shape, generator=gen) * std
        weights[name] = 1.0 + noise if name.rpartition(".")[2] == "w" else noise
    return weights
