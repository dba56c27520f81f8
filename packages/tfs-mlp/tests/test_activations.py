"""gelu and relu against torch's own F.gelu(approximate="tanh") and F.relu.

Tolerances (float32): values atol 1e-6, rtol 1e-6 (the largest difference measured over
[-20, 20] and the extra points below was 2.4e-7); gradients atol 1e-5, rtol 1e-5 (measured
1.1e-6). float64: atol 1e-12. Every test runs at one and at two intra-op threads.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

import tfs_mlp.activations as activations
from tfs_mlp import ACTIVATIONS, gelu, relu
from tfs_mlp.activations import gelu_formula

pytestmark = pytest.mark.usefixtures("intra_op_threads")

VALUE_ATOL, VALUE_RTOL = 1e-6, 1e-6
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-5


def _points(dtype: torch.dtype = torch.float32) -> Tensor:
    """A dense grid plus zero (both signs), tiny and very large magnitudes."""
    extremes = torch.tensor(
        [-1e4, -1e3, -100.0, -50.0, -1e-6, -0.0, 0.0, 1e-6, 50.0, 100.0, 1e3, 1e4],
        dtype=dtype,
    )
    return torch.cat([torch.linspace(-20.0, 20.0, 4001, dtype=dtype), extremes])


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def test_gelu_matches_torch_tanh_gelu() -> None:
    x = _points()
    torch.testing.assert_close(gelu(x), _gelu_tanh(x), atol=VALUE_ATOL, rtol=VALUE_RTOL)


def test_gelu_matches_torch_tanh_gelu_in_float64() -> None:
    x = _points(torch.float64)
    out = gelu(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _gelu_tanh(x), atol=1e-12, rtol=1e-12)


def test_gelu_is_the_tanh_approximation_not_exact_erf_gelu() -> None:
    # GPT-2 uses the tanh form; it differs from the erf form by up to ~5e-4 (near x = -2.7).
    x = torch.linspace(-10.0, 10.0, 20001)
    gap = (gelu(x) - F.gelu(x, approximate="none")).abs().max().item()
    assert gap > 1e-4, f"gelu looks like exact erf GELU (max gap {gap:.2e})"
    # ...while still being an approximation of it.
    assert gap < 1e-3


def test_gelu_known_values() -> None:
    x = torch.tensor([0.0, 1.0, -1.0])
    # 0.5 * 1 * (1 + tanh(sqrt(2/pi) * 1.044715)) computed by hand: 0.8411920.
    torch.testing.assert_close(
        gelu(x), torch.tensor([0.0, 0.8411920, -0.1588080]), atol=1e-6, rtol=0
    )


def test_gelu_gradient_matches_torch() -> None:
    x = _points().requires_grad_()
    (ours,) = torch.autograd.grad(gelu(x).sum(), x)
    (ref,) = torch.autograd.grad(_gelu_tanh(x).sum(), x)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, ref, atol=GRAD_ATOL, rtol=GRAD_RTOL)


def test_relu_matches_torch_relu() -> None:
    x = _points()
    torch.testing.assert_close(relu(x), F.relu(x), atol=0.0, rtol=0.0)


def test_relu_gradient_matches_torch_including_zero() -> None:
    # F.relu's derivative at exactly 0 is 0; a clamp-based relu would give 1 there.
    x = _points().requires_grad_()
    (ours,) = torch.autograd.grad(relu(x).sum(), x)
    (ref,) = torch.autograd.grad(F.relu(x).sum(), x)
    torch.testing.assert_close(ours, ref, atol=0.0, rtol=0.0)


def test_relu_gradient_at_zero_is_zero() -> None:
    x = torch.zeros(3, requires_grad=True)
    (grad,) = torch.autograd.grad(relu(x).sum(), x)
    assert torch.equal(grad, torch.zeros(3))


def test_relu_propagates_nan_like_torch() -> None:
    x = torch.tensor([float("nan"), -1.0, 2.0])
    assert torch.equal(relu(x).isnan(), F.relu(x).isnan())


def test_activations_keep_dtype_and_shape_and_do_not_mutate() -> None:
    g = torch.Generator().manual_seed(0)
    for act in (gelu, relu):
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            x = torch.randn(2, 3, 5, generator=g).to(dtype)
            before = x.clone()
            out = act(x)
            assert out.dtype == dtype
            assert out.shape == x.shape
            assert torch.equal(x, before)


def test_activations_registry() -> None:
    assert set(ACTIVATIONS) == {"gelu", "relu"}
    assert ACTIVATIONS["gelu"] is gelu
    assert ACTIVATIONS["relu"] is relu


@settings(max_examples=20, deadline=None)
@given(
    shape=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
    scale=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_activations_match_torch_on_random_tensors(
    shape: list[int], scale: float, seed: int
) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale
    torch.testing.assert_close(gelu(x), _gelu_tanh(x), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(relu(x), F.relu(x), atol=0.0, rtol=0.0)


def test_gelu_written_out_derivative_passes_gradcheck() -> None:
    """gelu's backward is written by hand (dy/dx = s (1 + u - u s)); float64 gradcheck
    compares it with finite differences, over the range where the sigmoid bends."""
    x = torch.linspace(-6.0, 6.0, 41, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gelu, (x,))


def test_gelu_keeps_only_its_input_for_backward(
    saved_for_backward: Callable[..., list[Tensor]],
) -> None:
    x = torch.randn(4, 8, requires_grad=True)
    saved = saved_for_backward(gelu, x)
    assert len(saved) == 1
    assert saved[0] is x


def test_gelu_in_chunks_equals_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU forward and backward run over chunks of the flattened tensor; chunks that
    do not divide it (7 elements), on a non-contiguous input, give torch's GELU."""
    x = torch.randn(3, 4, 5).transpose(1, 2).requires_grad_(True)
    expected = _gelu_tanh(x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    monkeypatch.setattr(activations, "_CPU_CHUNK", 7)
    got = gelu(x)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)
    (got_grad,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(got_grad, expected_grad, atol=GRAD_ATOL, rtol=GRAD_RTOL)


@pytest.mark.parametrize("size", [2**20 + 5, 100_000])
def test_gelu_equals_its_formula_where_threads_split_the_work(
    size: int, compare_fast_op: Callable[..., None]
) -> None:
    """2 ** 20 + 5 elements (two full chunks and a short one) or 100,000 (one chunk,
    computed whole), each split across threads; against gelu_formula (the tanh form as
    written) at the gradient tolerance above, and two runs give the same bits, with and
    without autograd recording."""
    x = 4.0 * torch.randn(size, generator=torch.Generator().manual_seed(0))
    compare_fast_op(gelu, gelu_formula, (x,), rtol=GRAD_RTOL, atol=GRAD_ATOL)
