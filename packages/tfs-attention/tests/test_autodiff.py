"""Second derivatives and torch.func transforms through attention.

The attention core has a written-out backward pass for plain first-order gradients; where
a gradient is differentiated again, or under ``torch.func``, its formula
(``attention_pattern(q, k) @ v``) runs instead. The QKV projection is plain tensor
operations, which autograd differentiates to any order. The helper
(``verify_autodiff`` in the repository's conftest.py) compares every transform with ordinary
autograd in float64 at rtol 1e-9.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from tfs_attention import MultiHeadAttention
from tfs_attention.qkv_projection import qkv_projection
from tfs_attention.softmax_attention import softmax_attention

VerifyAutodiff = Callable[..., None]
Float64Params = Callable[..., dict[str, Tensor]]


def _randn(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# A padding mask whose first sequence hides its first two sources: with causal attention
# its first two destinations see nothing and write only b_O.
PADDED = torch.tensor([[False, False, True, True], [True, True, True, True]])


@pytest.mark.parametrize(
    ("causal", "mask"),
    [(True, None), (False, None), (True, PADDED), (False, PADDED)],
    ids=["causal", "bidirectional", "causal-padded", "bidirectional-padded"],
)
def test_multi_head_attention(
    causal: bool,
    mask: Tensor | None,
    verify_autodiff: VerifyAutodiff,
    float64_params: Float64Params,
) -> None:
    attn = MultiHeadAttention(d_model=4, n_heads=2, causal=causal)
    inputs = {"x": _randn(2, 4, 4)}
    if mask is not None:
        inputs["mask"] = mask
    verify_autodiff(
        lambda p, i: functional_call(attn, p, (i["x"], i.get("mask"))),
        float64_params(attn),
        inputs,
        fast_gradgradcheck=True,  # every entry of each op's Hessian: the two tests below
    )


@pytest.mark.parametrize("causal", [True, False])
def test_softmax_attention(causal: bool, verify_autodiff: VerifyAutodiff) -> None:
    """The core alone, with fewer destinations than sources (as after a cache)."""
    inputs = {"q": _randn(2, 2, 3, 2, seed=1), "k": _randn(2, 2, 5, 2, seed=2)}
    inputs["v"] = _randn(2, 2, 5, 2, seed=3)
    verify_autodiff(
        lambda p, i: softmax_attention(i["q"], i["k"], i["v"], causal=causal), {}, inputs
    )


def test_qkv_projection(verify_autodiff: VerifyAutodiff) -> None:
    params = {name: _randn(2, 3, 2, seed=s) for s, name in enumerate(("W_Q", "W_K", "W_V"))}
    params |= {name: _randn(2, 2, seed=s) for s, name in enumerate(("b_Q", "b_K", "b_V"), 3)}
    verify_autodiff(
        lambda p, i: qkv_projection(
            i["x"], *(p[n] for n in ("W_Q", "W_K", "W_V")), *(p[n] for n in ("b_Q", "b_K", "b_V"))
        ),
        params,
        {"x": _randn(4, 3)},
    )
