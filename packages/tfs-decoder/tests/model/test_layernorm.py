"""LayerNorm against torch's F.layer_norm.

Mapping: ``F.layer_norm(x, (d_model,), weight=ln.w, bias=ln.b, eps=ln.eps)``.
Weights and biases are random (not the identity init) so both are really exercised.

Tolerance (float32): atol 1e-5, rtol 1e-5 for outputs and gradients (measured differences
~5e-7 on inputs of scale 4). Every test runs at one and at two intra-op threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from torch import Tensor

from tfs_decoder import LayerNorm
from tfs_decoder.layernorm import _LayerNorm, layer_norm, layer_norm_formula

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL, RTOL = 1e-5, 1e-5


def _make_ln(d_model: int, eps: float = 1e-5, seed: int = 0) -> LayerNorm:
    ln = LayerNorm(d_model, eps=eps)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ln.w.copy_(1.0 + torch.randn(d_model, generator=g))
        ln.b.copy_(torch.randn(d_model, generator=g))
    return ln


def _reference(ln: LayerNorm, x: Tensor, eps: float | None = None) -> Tensor:
    return F.layer_norm(
        x, (ln.d_model,), weight=ln.w, bias=ln.b, eps=ln.eps if eps is None else eps
    )


@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (2, 1), (1, 1), (4, 2)])
def test_matches_f_layer_norm(batch: int, pos: int) -> None:
    ln = _make_ln(16, seed=1)
    x = 4.0 * torch.randn(batch, pos, 16, generator=torch.Generator().manual_seed(2)) + 2.0
    out = ln(x)
    assert out.shape == (batch, pos, 16)
    torch.testing.assert_close(out, _reference(ln, x), atol=ATOL, rtol=RTOL)


def test_eps_is_used() -> None:
    # With a variance ~0.09 per row, eps = 0.1 versus 1e-5 changes the output by ~30%.
    ln = _make_ln(8, eps=0.1, seed=3)
    x = 0.3 * torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(4))
    out = ln(x)
    torch.testing.assert_close(out, _reference(ln, x, eps=0.1), atol=ATOL, rtol=RTOL)
    assert (out - _reference(ln, x, eps=1e-5)).abs().max() > 0.1
    assert ln.eps == 0.1


def test_uses_biased_variance() -> None:
    # Row [0, 2]: mean 1, biased variance 1 -> [-1, 1] / sqrt(1 + eps);
    # the unbiased variance (2) would give ±0.707.
    ln = LayerNorm(2, eps=1e-5)
    out = ln(torch.tensor([[[0.0, 2.0]]]))
    expected = torch.tensor([[[-1.0, 1.0]]]) / math.sqrt(1.0 + 1e-5)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0.0)


def test_biased_variance_on_random_rows() -> None:
    ln = _make_ln(6, seed=5)
    x = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(6))
    centred = x - x.mean(-1, keepdim=True)
    biased = centred / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
    unbiased = centred / torch.sqrt(x.var(-1, unbiased=True, keepdim=True) + ln.eps)
    out = ln(x)
    torch.testing.assert_close(out, biased * ln.w + ln.b, atol=ATOL, rtol=RTOL)
    assert (out - (unbiased * ln.w + ln.b)).abs().max() > 0.05


@pytest.mark.parametrize("value", [0.0, 2.5, -3.0, 3.7, 1e3])
def test_constant_row_gives_bias_without_nan(value: float) -> None:
    # Zero variance: the output is b. For constants whose mean is not exact in float32
    # (3.7) the rounding residue (~1e-7) is amplified by 1/sqrt(eps) ≈ 316: measured 8e-5,
    # so atol 1e-3 here.
    ln = _make_ln(8, seed=7)
    x = torch.full((2, 3, 8), value)
    out = ln(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ln.b.detach().expand(2, 3, 8), atol=1e-3, rtol=0.0)
    torch.testing.assert_close(out, _reference(ln, x), atol=1e-3, rtol=0.0)


def test_constant_row_has_finite_gradients() -> None:
    ln = _make_ln(8, seed=8)
    x = torch.full((1, 2, 8), 2.5, requires_grad=True)
    torch.autograd.backward(ln(x).sum())
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


def test_init_is_identity_affine() -> None:
    ln = LayerNorm(5)
    assert torch.equal(ln.w, torch.ones(5))
    assert torch.equal(ln.b, torch.zeros(5))
    assert ln.eps == 1e-5
    shapes = {name: tuple(p.shape) for name, p in ln.named_parameters()}
    assert shapes == {"w": (5,), "b": (5,)}


def test_reset_parameters_restores_init() -> None:
    ln = _make_ln(5, seed=9)
    ln.reset_parameters()
    assert torch.equal(ln.w, torch.ones(5))
    assert torch.equal(ln.b, torch.zeros(5))


def test_normalised_rows_have_zero_mean_unit_variance_at_init() -> None:
    ln = LayerNorm(32)
    x = 5.0 * torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(10)) - 7.0
    out = ln(x)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0.0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0.0)


def test_wrong_width_raises() -> None:
    ln = LayerNorm(4)
    with pytest.raises(ValueError, match=r"x: expected last dimension d_model=4, got \(2, 3, 5\)"):
        ln(torch.randn(2, 3, 5))


def test_wrong_rank_raises_type_check_error() -> None:
    with pytest.raises(TypeCheckError):
        LayerNorm(4)(torch.randn(3, 4))


@pytest.mark.parametrize("d_model", [0, -2, True])
def test_bad_d_model_raises(d_model: int) -> None:
    with pytest.raises(ValueError, match=rf"d_model: expected a positive int, got {d_model!r}"):
        LayerNorm(d_model)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_bad_eps_raises(eps: float) -> None:
    with pytest.raises(ValueError, match=rf"eps: expected a positive float, got {eps!r}"):
        LayerNorm(4, eps=eps)


def test_does_not_mutate_input() -> None:
    ln = _make_ln(6, seed=11)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(12)).requires_grad_()
    before = x.detach().clone()
    torch.autograd.backward(ln(x).sum())
    assert torch.equal(x.detach(), before)


def test_gradients_match_f_layer_norm() -> None:
    g = torch.Generator().manual_seed(13)
    x = 3.0 * torch.randn(3, 4, 10, generator=g)
    upstream = torch.randn(3, 4, 10, generator=g)
    ours = _make_ln(10, eps=1e-3, seed=14)
    ref = _make_ln(10, eps=1e-3, seed=14)
    x_ours = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    torch.autograd.backward((ours(x_ours) * upstream).sum())
    torch.autograd.backward((_reference(ref, x_ref) * upstream).sum())
    for a, b in ((x_ours.grad, x_ref.grad), (ours.w.grad, ref.w.grad), (ours.b.grad, ref.b.grad)):
        assert a is not None
        assert b is not None
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(min_value=1, max_value=4),
    pos=st.integers(min_value=1, max_value=6),
    d_model=st.integers(min_value=1, max_value=16),
    eps=st.sampled_from([1e-5, 1e-3, 0.1, 1.0]),
    scale=st.floats(min_value=0.1, max_value=10.0),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_matches_f_layer_norm_property(
    batch: int, pos: int, d_model: int, eps: float, scale: float, seed: int
) -> None:
    ln = _make_ln(d_model, eps=eps, seed=seed)
    x = scale * torch.randn(batch, pos, d_model, generator=torch.Generator().manual_seed(seed))
    out = ln(x)
    assert out.shape == (batch, pos, d_model)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, _reference(ln, x), atol=ATOL, rtol=RTOL)


def test_hook_normalized_sees_the_output_and_can_replace_it() -> None:
    ln = LayerNorm(6)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    seen: list[Tensor] = []
    handle = ln.hook_normalized.register_forward_hook(lambda m, i, out: seen.append(out))
    out = ln(x)
    handle.remove()
    assert len(seen) == 1
    assert seen[0] is out
    ln.hook_normalized.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    assert torch.equal(ln(x), torch.zeros(2, 3, 6))


def test_written_out_backward_passes_gradcheck() -> None:
    """LayerNorm's backward is written by hand; float64 gradcheck against finite
    differences for x, w and b, on rows with different means and spreads."""
    g = torch.Generator().manual_seed(0)
    w, b = (torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True) for _ in "wb")
    x = (torch.randn(2, 3, 5, generator=g, dtype=torch.float64) * 3 + 1).requires_grad_(True)

    def layer_norm(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        out: Tensor = _LayerNorm.apply(x, w, b, 1e-5)  # type: ignore[no-untyped-call]
        return out

    assert torch.autograd.gradcheck(layer_norm, (x, w, b))


def test_equals_its_formula_where_threads_split_the_work(
    compare_fast_op: Callable[..., None],
) -> None:
    """64 x 128 rows of width 64, against layer_norm_formula at the tolerance above, and
    two runs give the same bits."""
    g = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(64, 128, 64, generator=g) + 1.0
    w, b = 1.0 + torch.randn(64, generator=g), torch.randn(64, generator=g)
    compare_fast_op(
        lambda x, w, b: layer_norm(x, w, b, 1e-5),
        lambda x, w, b: layer_norm_formula(x, w, b, 1e-5),
        (x, w, b),
        rtol=RTOL,
        atol=ATOL,
    )


def test_backward_keeps_the_input_and_two_numbers_per_row(
    saved_for_backward: Callable[..., list[Tensor]],
) -> None:
    """What autograd keeps: ``x`` itself (backward rebuilds ``xhat`` from it, and a
    second-order backward differentiates the formula at it), ``w``, ``b``, and per row
    ``sum(x)`` and ``r = rstd / sqrt(d_model)``: no other ``[rows, d_model]`` tensor."""
    ln = _make_ln(8)
    x = 3.0 * torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    x.requires_grad_()
    saved = saved_for_backward(ln, x)
    assert [t is p for t, p in zip(saved, (x, ln.w, ln.b), strict=False)] == [True] * 3
    total, r = saved[3:]
    x = x.detach()
    centred = x - x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + ln.eps)
    torch.testing.assert_close(total, x.sum(-1, keepdim=True), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(r, rstd / math.sqrt(8), atol=ATOL, rtol=RTOL)
