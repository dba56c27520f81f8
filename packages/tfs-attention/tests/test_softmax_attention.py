"""softmax_attention (blocks of destinations, written-out backward) against the formula.

Reference: ``softmax_attention_formula``, ``attention_pattern(q, k) @ v`` in one piece,
differentiated by autograd; attention_pattern itself against ``softmax(q k^T + mask)``
written here, with rows that see no source set to zero. Tolerance: fp32 atol = rtol =
1e-5 for outputs and gradients (the blocked form sums the same terms in another order);
float64 gradcheck for the hand-written backward. Every test runs at one and at two intra-op threads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import tfs_attention.softmax_attention as module
from tfs_attention.softmax_attention import (
    attention_pattern,
    softmax_attention,
    softmax_attention_formula,
)

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL = RTOL = 1e-5


def masked_softmax(q: Tensor, k: Tensor, causal: bool, keep: Tensor | None) -> Tensor:
    n_dest, n_src = q.shape[2], k.shape[2]
    hidden = torch.zeros(n_dest, n_src, dtype=torch.bool)
    if causal:
        hidden = torch.ones(n_dest, n_src, dtype=torch.bool).triu(n_src - n_dest + 1)
    if keep is not None:
        hidden = hidden | ~keep[:, None, None, :]
    pattern = torch.softmax((q @ k.transpose(-1, -2)).masked_fill(hidden, float("-inf")), -1)
    return torch.nan_to_num(pattern)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("n_dest", "n_src"), [(7, 7), (1, 9), (5, 12)])
def test_attention_pattern_is_the_masked_softmax(causal: bool, n_dest: int, n_src: int) -> None:
    keep = torch.ones(2, n_src, dtype=torch.bool)
    keep[0, : n_src // 2 + 1] = False  # early destinations of sequence 0 see nothing
    q, k, _ = inputs(n_dest, n_src)
    pattern = attention_pattern(q, k, causal=causal, attention_mask=keep)
    torch.testing.assert_close(pattern, masked_softmax(q, k, causal, keep), atol=0.0, rtol=0.0)
    torch.testing.assert_close(
        attention_pattern(q, k, causal=causal),
        masked_softmax(q, k, causal, None),
        atol=0.0,
        rtol=0.0,
    )


def inputs(n_dest: int, n_src: int, dtype: torch.dtype = torch.float32) -> list[Tensor]:
    g = torch.Generator().manual_seed(n_dest * 100 + n_src)
    shapes = [(2, 3, n_dest, 4), (2, 3, n_src, 4), (2, 3, n_src, 4)]
    return [torch.randn(s, generator=g, dtype=dtype, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("block", [2, 3, 32])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    ("n_dest", "n_src"),
    [(7, 7), (1, 1), (1, 9), (5, 12), (8, 8)],  # (1, 9), (5, 12): after cached positions
)
@pytest.mark.parametrize("padded", [False, True])
def test_outputs_and_gradients_equal_the_formula(
    block: int, causal: bool, n_dest: int, n_src: int, padded: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "BLOCK", block)
    keep = None
    if padded:
        keep = torch.ones(2, n_src, dtype=torch.bool)
        keep[0, : n_src // 2 + 1] = False  # left padding: early destinations may see nothing
    q, k, v = inputs(n_dest, n_src)
    grad_z = torch.randn(2, 3, n_dest, 4, generator=torch.Generator().manual_seed(9))

    z = softmax_attention(q, k, v, causal=causal, attention_mask=keep)
    expected = softmax_attention_formula(q, k, v, causal, keep)
    torch.testing.assert_close(z, expected, atol=ATOL, rtol=RTOL)
    got = torch.autograd.grad(z, (q, k, v), grad_z)
    want = torch.autograd.grad(expected, (q, k, v), grad_z)
    for name, a, b in zip("qkv", got, want, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=name)


@pytest.mark.parametrize("causal", [True, False])
def test_gradcheck_in_float64(causal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "BLOCK", 2)
    q, k, v = inputs(3, 5, dtype=torch.float64)
    keep = torch.tensor([[True] * 5, [False, False, True, True, True]])
    assert torch.autograd.gradcheck(
        lambda q, k, v: softmax_attention(q, k, v, causal=causal, attention_mask=keep), (q, k, v)
    )


def test_no_dest_by_src_tensor_is_kept_for_backward() -> None:
    """Only q, k, v, z and the mask are saved: memory per layer grows with pos, not pos^2."""
    q, k, v = inputs(64, 64)
    saved: list[tuple[int, ...]] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        softmax_attention(q, k, v, causal=True)
    assert saved
    assert all(shape[-1] == 4 for shape in saved), saved


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n_dest", [256, 1])
def test_equals_the_formula_where_threads_split_the_work(
    causal: bool, n_dest: int, compare_fast_op: Callable[..., None]
) -> None:
    """4 sequences x 4 heads x 256 source positions, d_head 16, with 256 destinations (8
    blocks) or 1 (one block: a generation step after 255 cached positions); atol = rtol =
    1e-5 as above, and two runs give the same bits, with and without autograd recording."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 4, 256, 16, generator=g) / 2 for _ in "qkv")
    q = q[:, :, -n_dest:]
    compare_fast_op(
        lambda q, k, v: softmax_attention(q, k, v, causal=causal),
        lambda q, k, v: softmax_attention_formula(q, k, v, causal),
        (q, k, v),
        rtol=1e-5,
        atol=1e-5,
    )
