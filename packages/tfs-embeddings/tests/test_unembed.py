"""Unit tests of tfs_embeddings.Unembed.

Reference: ``nn.Linear(d_model, d_vocab)`` under the mapping ``weight = W_U.T`` (nn.Linear
stores ``[out, in]``, we store ``[in, out]``) and ``bias = b_U``. Tolerance: fp32,
atol = rtol = 1e-5 (inputs and weights O(1), so sums of d_model products are O(sqrt(d_model));
a transposed weight or a missing bias is off by O(1)).
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from torch import Tensor, nn

from tfs_embeddings import Unembed

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL = 1e-5
RTOL = 1e-5


def _make(d_model: int, d_vocab: int, seed: int = 0) -> Unembed:
    """An Unembed with O(1) weights and a non-zero bias (the zero init would hide b_U)."""
    unembed = Unembed(d_model=d_model, d_vocab=d_vocab)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        unembed.W_U.copy_(torch.randn(d_model, d_vocab, generator=gen))
        unembed.b_U.copy_(torch.randn(d_vocab, generator=gen))
    return unembed


def _reference(unembed: Unembed) -> nn.Linear:
    linear = nn.Linear(unembed.d_model, unembed.d_vocab)
    with torch.no_grad():
        linear.weight.copy_(unembed.W_U.T)
        linear.bias.copy_(unembed.b_U)
    return linear


def _residual(batch: int, pos: int, d_model: int, seed: int = 1) -> Tensor:
    return torch.randn(batch, pos, d_model, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (5, 3), (1, 1), (2, 1)])
def test_matches_nn_linear(batch: int, pos: int) -> None:
    unembed = _make(d_model=8, d_vocab=13)
    residual = _residual(batch, pos, 8)
    logits = unembed(residual)
    assert logits.shape == (batch, pos, 13)
    torch.testing.assert_close(logits, _reference(unembed)(residual), atol=ATOL, rtol=RTOL)


def test_gradients_match_nn_linear() -> None:
    unembed = _make(d_model=6, d_vocab=9)
    linear = _reference(unembed)
    residual = _residual(2, 4, 6)
    x_ours = residual.clone().requires_grad_(True)
    x_ref = residual.clone().requires_grad_(True)
    upstream = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(2))
    torch.autograd.backward((unembed(x_ours) * upstream).sum())
    torch.autograd.backward((linear(x_ref) * upstream).sum())
    assert unembed.W_U.grad is not None
    assert unembed.b_U.grad is not None
    assert linear.weight.grad is not None
    assert linear.bias.grad is not None
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(unembed.W_U.grad, linear.weight.grad.T, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(unembed.b_U.grad, linear.bias.grad, atol=ATOL, rtol=RTOL)


def test_parameters_and_shapes() -> None:
    unembed = Unembed(d_model=8, d_vocab=13)
    shapes = {name: tuple(p.shape) for name, p in unembed.named_parameters()}
    assert shapes == {"W_U": (8, 13), "b_U": (13,)}


def test_b_u_starts_at_zero() -> None:
    torch.manual_seed(0)
    unembed = Unembed(d_model=8, d_vocab=13)
    assert torch.count_nonzero(unembed.b_U) == 0
    # Changing the bias and resetting brings it back to zero.
    with torch.no_grad():
        unembed.b_U.fill_(3.0)
    unembed.reset_parameters()
    assert torch.count_nonzero(unembed.b_U) == 0


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_w_u_init_std(init_std: float) -> None:
    # 250 x 400 = 1e5 draws: sample-std relative standard error 0.22%, tolerance 2% (~9 SE);
    # mean standard error 0.0032 init_std, tolerance 0.03 init_std (~9 SE).
    torch.manual_seed(0)
    unembed = Unembed(d_model=250, d_vocab=400, init_std=init_std)
    w = unembed.W_U.detach()
    assert w.std().item() == pytest.approx(init_std, rel=0.02)
    assert abs(w.mean().item()) < 0.03 * init_std
    assert Unembed(d_model=2, d_vocab=3).init_std == 0.02


@pytest.mark.parametrize("width", [7, 9, 1])
def test_wrong_width_raises_value_error(width: int) -> None:
    unembed = Unembed(d_model=8, d_vocab=13)
    message = f"residual: expected shape [batch, pos, d_model=8], got (2, 3, {width})"
    with pytest.raises(ValueError, match=re.escape(message)):
        unembed(torch.zeros(2, 3, width))


def test_wrong_rank_raises_value_error_in_the_body() -> None:
    # Under the test hook jaxtyping rejects this first (see test_typecheck.py); without the
    # hook the body's own check names the argument, the expectation and the shape received.
    unembed = Unembed(d_model=8, d_vocab=13)
    message = "residual: expected shape [batch, pos, d_model=8], got (3, 8)"
    with pytest.raises(ValueError, match=re.escape(message)):
        inspect.unwrap(Unembed.forward)(unembed, torch.zeros(3, 8))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 0, "d_vocab": 4}, "d_model: expected a positive int, got 0"),
        ({"d_model": -2, "d_vocab": 4}, "d_model: expected a positive int, got -2"),
        ({"d_model": 4, "d_vocab": 0}, "d_vocab: expected a positive int, got 0"),
    ],
)
def test_non_positive_sizes_raise_value_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Unembed(**kwargs)


def test_input_is_not_mutated() -> None:
    unembed = _make(d_model=8, d_vocab=13)
    residual = _residual(2, 3, 8)
    before = residual.clone()
    torch.autograd.backward(unembed(residual).sum())
    assert torch.equal(residual, before)
