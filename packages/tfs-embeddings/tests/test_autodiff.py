"""Second derivatives and torch.func transforms through the embeddings.

The helper (``verify_autodiff`` in the repository's conftest.py) compares every transform
with ordinary autograd in float64 at rtol 1e-9. Token ids are the batched inputs: per-sample
gradients of ``W_E`` and ``W_pos`` come from ``vmap`` over them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from tfs_embeddings import Embed, LearnedPositionalEmbedding, SinusoidalPositionalEncoding, Unembed

VerifyAutodiff = Callable[..., None]
Float64Params = Callable[..., dict[str, Tensor]]

# Repeated ids, so that gradient rows of W_E sum several positions.
TOKENS = torch.tensor([[1, 4, 1, 1], [0, 2, 4, 2], [3, 3, 0, 1]])


@pytest.mark.parametrize(
    "module", [Embed(d_vocab=5, d_model=3), LearnedPositionalEmbedding(n_ctx=6, d_model=3)]
)
def test_lookups(
    module: nn.Module, verify_autodiff: VerifyAutodiff, float64_params: Float64Params
) -> None:
    verify_autodiff(
        lambda p, i: functional_call(module, p, (i["tokens"],)),
        float64_params(module),
        {"tokens": TOKENS},
    )


def test_unembed(verify_autodiff: VerifyAutodiff, float64_params: Float64Params) -> None:
    unembed = Unembed(d_model=3, d_vocab=5)
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    verify_autodiff(
        lambda p, i: functional_call(unembed, p, (i["x"],)), float64_params(unembed), {"x": x}
    )


def test_sinusoidal_positions_pass_through_transforms() -> None:
    """No parameters to differentiate: under vmap each sample gets the rows of its
    positions, and the derivative of ``x + PE`` with respect to ``x`` is the identity."""
    pe = SinusoidalPositionalEncoding(n_ctx=6, d_model=3).double()
    per_sample = vmap(lambda t: pe(t[None], 2))(TOKENS)
    assert torch.equal(per_sample, pe.W_pos[2:6].expand(3, 1, 4, 3))
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    jacobian = jacrev(lambda x: x + pe(TOKENS[:1]))(x)
    assert torch.equal(jacobian.reshape(12, 12), torch.eye(12, dtype=torch.float64))


def test_an_id_out_of_range_still_raises_under_vmap() -> None:
    """vmap cannot read the ids, so Embed's own range check steps aside under torch.func
    transforms; the lookup itself then refuses the id."""
    embed = Embed(d_vocab=5, d_model=3)
    with pytest.raises(RuntimeError, match="index 7 is out of bounds"):
        vmap(lambda t: embed(t[None]))(torch.tensor([[1, 7], [2, 3]]))
