"""What the three components' checks share: tfs's sizes and tolerance, random weights
and tokens, the nearest table row, tfs's reference module, and the verdict on a learned
bigram map. The checks every package runs (dtypes, sizes, equality, gradients, every
parameter used) are in :mod:`tfs_core.checking`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tfs_core.checking import CheckFailed, Contract, Subject, random_weights

D_VOCAB, D_MODEL, N_CTX, POS = 20, 12, 10, 6
TOLERANCE = 1e-5
"""float32: lookups copy their rows exactly; ``x W_U + b_U`` of tfs and of a plain matmul
agree to about 1e-6 here (12 products a sum)."""

Factory = Callable[..., nn.Module]
"""Builds a module from keywords (``d_vocab``, ``d_model``, ``n_ctx``); a class is one."""


def _weights(contract: Contract, seed: int = 0) -> dict[str, Tensor]:
    """Standard normal weights: rows far apart, so an output vector names its row."""
    return random_weights(contract.params, seed, std=1.0)


def _tokens(high: int, seed: int = 1, batch: int = 2) -> Tensor:
    return torch.randint(0, high, (batch, POS), generator=torch.Generator().manual_seed(seed))


def _loaded(subject: Subject, contract: Contract) -> nn.Module:
    return subject.load(subject.build(), _weights(contract))


def _nearest_rows(vectors: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
    """For each vector ``[..., d]``: the index of the nearest row of ``table [n, d]`` and
    its distance (largest difference of one coordinate)."""
    gap = (vectors.detach()[..., None, :] - table).abs().amax(dim=-1).nan_to_num(math.inf)
    distance, row = gap.min(dim=-1)
    return row, distance


def _reference(cls: Factory, contract: Contract) -> nn.Module:
    reference = cls(**contract.kwargs())
    reference.load_state_dict(_weights(contract))
    return reference


def _bigram_learned(accuracy: float, smallest: float, which: str) -> None:
    if not (accuracy == 1.0 and smallest >= 0.99):
        raise CheckFailed(
            f"after 60 steps on a fixed random bigram map of 32 ids the model predicts the "
            f"next id for {accuracy:.1%} of ids, giving the right one at least "
            f"{smallest:.3g} (tfs's: 100% and 0.99999; needed 100% and 0.99) — {which}"
        )
