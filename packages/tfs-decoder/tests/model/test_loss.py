"""cross_entropy and next_token_loss against torch's F.cross_entropy.

Mapping: ``cross_entropy(logits, targets)`` ==
``F.cross_entropy(logits.reshape(-1, d_vocab), targets.reshape(-1), reduction="none")``
reshaped to ``[batch, pos]``; ``next_token_loss(logits, tokens)`` ==
``F.cross_entropy(logits[:, :-1].reshape(-1, d_vocab), tokens[:, 1:].reshape(-1))``.

Tolerance (float32): atol 1e-5, rtol 1e-5 (measured differences 0 to ~1e-7); bf16 inputs are
compared with F.cross_entropy on the same bf16 values upcast to float32, same tolerance.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError
from torch import Tensor

from tfs_decoder import cross_entropy, next_token_loss

ATOL, RTOL = 1e-5, 1e-5


def _data(batch: int, pos: int, d_vocab: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 3.0 * torch.randn(batch, pos, d_vocab, generator=g)
    tokens = torch.randint(0, d_vocab, (batch, pos), generator=g)
    return logits, tokens


def _reference_per_position(logits: Tensor, targets: Tensor) -> Tensor:
    batch, pos, d_vocab = logits.shape
    flat = F.cross_entropy(logits.reshape(-1, d_vocab), targets.reshape(-1), reduction="none")
    return flat.reshape(batch, pos)


def _reference_next_token(logits: Tensor, tokens: Tensor) -> Tensor:
    d_vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, d_vocab), tokens[:, 1:].reshape(-1))


@pytest.mark.parametrize(
    ("batch", "pos", "d_vocab"), [(3, 5, 11), (2, 1, 7), (1, 4, 4), (2, 6, 50)]
)
def test_cross_entropy_matches_f_cross_entropy(batch: int, pos: int, d_vocab: int) -> None:
    logits, targets = _data(batch, pos, d_vocab, seed=0)
    out = cross_entropy(logits, targets)
    assert out.shape == (batch, pos)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference_per_position(logits, targets), atol=ATOL, rtol=RTOL)
    # The same through F.cross_entropy's [N, C, d1] form, classes on dim 1 = vocabulary.
    kdim = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(out, kdim, atol=ATOL, rtol=RTOL)


def test_cross_entropy_known_values() -> None:
    # One position, logits [0, ln 2, ln 3] -> softmax [1/6, 2/6, 3/6].
    logits = torch.tensor([[[0.0, math.log(2.0), math.log(3.0)]]])
    for target, prob in ((0, 1 / 6), (1, 2 / 6), (2, 3 / 6)):
        out = cross_entropy(logits, torch.tensor([[target]]))
        torch.testing.assert_close(out, torch.tensor([[-math.log(prob)]]), atol=1e-6, rtol=0.0)


def test_cross_entropy_is_over_vocabulary_not_positions() -> None:
    # pos != d_vocab. Adding a different constant to every position's logits leaves a
    # softmax over the vocabulary unchanged but changes a softmax over positions.
    logits, targets = _data(2, 3, 5, seed=1)
    shift = 10.0 * torch.randn(2, 3, 1, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        cross_entropy(logits + shift, targets), cross_entropy(logits, targets), atol=1e-4, rtol=0.0
    )
    over_positions = -torch.log_softmax(logits, dim=1).gather(-1, targets.unsqueeze(-1))[..., 0]
    ours = cross_entropy(logits, targets)
    assert (ours - over_positions).abs().max() > 0.1
    torch.testing.assert_close(ours, _reference_per_position(logits, targets), atol=ATOL, rtol=RTOL)


def test_next_token_loss_would_catch_the_seed_projects_axis_bug() -> None:
    # The seed project's bug: F.cross_entropy(logits, targets) on [batch, pos, d_vocab]
    # treats dim 1 (positions) as the classes. It only runs silently when pos == d_vocab,
    # so that is the case checked here: ours must agree with the vocabulary-axis loss and
    # disagree with the positions-axis one.
    logits, tokens = _data(3, 6, 5, seed=3)  # 5 predicted positions, 5 vocabulary entries
    shifted_logits, shifted_tokens = logits[:, :-1], tokens[:, 1:]
    wrong = F.cross_entropy(shifted_logits, shifted_tokens)  # classes = positions
    ours = next_token_loss(logits, tokens)
    torch.testing.assert_close(ours, _reference_next_token(logits, tokens), atol=ATOL, rtol=RTOL)
    assert (ours - wrong).abs() > 0.1


@pytest.mark.parametrize(("batch", "pos", "d_vocab"), [(3, 5, 11), (2, 2, 7), (1, 9, 3)])
def test_next_token_loss_matches_shifted_f_cross_entropy(
    batch: int, pos: int, d_vocab: int
) -> None:
    logits, tokens = _data(batch, pos, d_vocab, seed=4)
    out = next_token_loss(logits, tokens)
    assert out.shape == ()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference_next_token(logits, tokens), atol=ATOL, rtol=RTOL)


def test_next_token_loss_is_shifted() -> None:
    # Logits at position p put a large score on tokens[:, p + 1]: the shifted loss is ~0,
    # while the unshifted one (predicting tokens[:, p] from position p) is large.
    d_vocab = 7
    # Consecutive tokens differ, so "predict the next" and "predict this one" disagree.
    start = torch.randint(0, d_vocab, (2, 1), generator=torch.Generator().manual_seed(5))
    tokens = (start + torch.arange(6)) % d_vocab
    logits = torch.zeros(2, 6, d_vocab)
    logits[:, :-1].scatter_(-1, tokens[:, 1:].unsqueeze(-1), 20.0)
    assert next_token_loss(logits, tokens) < 1e-6
    unshifted = F.cross_entropy(logits.reshape(-1, d_vocab), tokens.reshape(-1))
    assert unshifted > 5.0


def test_next_token_loss_ignores_last_position_logits() -> None:
    logits, tokens = _data(2, 4, 6, seed=6)
    changed = logits.clone()
    changed[:, -1] = 100.0 * torch.randn(2, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(next_token_loss(logits, tokens), next_token_loss(changed, tokens))


@pytest.mark.parametrize("d_vocab", [2, 3, 7, 50, 50257])
@pytest.mark.parametrize("value", [0.0, 5.3, -40.0])
def test_uniform_logits_give_ln_d_vocab(d_vocab: int, value: float) -> None:
    # Within 2 float32 ulps of float32(ln d_vocab); measured bit-exact.
    logits = torch.full((2, 3, d_vocab), value)
    tokens = torch.randint(0, d_vocab, (2, 3), generator=torch.Generator().manual_seed(8))
    expected = torch.tensor(math.log(d_vocab))
    torch.testing.assert_close(
        cross_entropy(logits, tokens), expected.expand(2, 3), atol=0.0, rtol=2.4e-7
    )
    torch.testing.assert_close(next_token_loss(logits, tokens), expected, atol=0.0, rtol=2.4e-7)


@pytest.mark.parametrize("pos", [1, 0])
def test_next_token_loss_needs_two_positions(pos: int) -> None:
    logits = torch.randn(2, pos, 5)
    tokens = torch.zeros(2, pos, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"tokens: expected at least 2 positions, got {pos}"):
        next_token_loss(logits, tokens)


def test_mismatched_shapes_raise() -> None:
    logits = torch.randn(2, 3, 5)
    tokens = torch.zeros(2, 4, dtype=torch.long)
    # With the runtime checker (as in these tests) the shared "batch pos" dims disagree.
    with pytest.raises(TypeCheckError):
        cross_entropy(logits, tokens)
    with pytest.raises(TypeCheckError):
        next_token_loss(logits, tokens)
    with pytest.raises(TypeCheckError):
        cross_entropy(logits, torch.zeros(3, 3, dtype=torch.long))
    # Without it, the functions' own checks name the argument and both shapes.
    with pytest.raises(
        ValueError,
        match=r"targets: expected shape \(2, 3\) to match logits \(2, 3, 5\), got \(2, 4\)",
    ):
        inspect.unwrap(cross_entropy)(logits, tokens)
    with pytest.raises(
        ValueError,
        match=r"tokens: expected shape \(2, 3\) to match logits \(2, 3, 5\), got \(2, 4\)",
    ):
        inspect.unwrap(next_token_loss)(logits, tokens)


def test_float_targets_raise_type_check_error() -> None:
    with pytest.raises(TypeCheckError):
        cross_entropy(torch.randn(2, 3, 5), torch.zeros(2, 3))


def test_bf16_logits_give_finite_float32_loss() -> None:
    logits, tokens = _data(2, 5, 13, seed=9)
    logits_bf16 = logits.to(torch.bfloat16)
    per_position = cross_entropy(logits_bf16, tokens)
    loss = next_token_loss(logits_bf16, tokens)
    assert per_position.dtype == torch.float32
    assert loss.dtype == torch.float32
    assert torch.isfinite(per_position).all()
    assert torch.isfinite(loss)
    upcast = logits_bf16.float()
    torch.testing.assert_close(
        per_position, _reference_per_position(upcast, tokens), atol=ATOL, rtol=RTOL
    )
    torch.testing.assert_close(loss, _reference_next_token(upcast, tokens), atol=ATOL, rtol=RTOL)


def test_gradient_matches_f_cross_entropy() -> None:
    logits, tokens = _data(2, 5, 9, seed=10)
    ours_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    torch.autograd.backward(next_token_loss(ours_in, tokens))
    torch.autograd.backward(_reference_next_token(ref_in, tokens))
    assert ours_in.grad is not None
    assert ref_in.grad is not None
    torch.testing.assert_close(ours_in.grad, ref_in.grad, atol=1e-6, rtol=1e-5)
    assert torch.equal(ours_in.grad[:, -1], torch.zeros(2, 9))


def test_does_not_mutate_inputs() -> None:
    logits, tokens = _data(2, 4, 6, seed=11)
    logits_before, tokens_before = logits.clone(), tokens.clone()
    cross_entropy(logits, tokens)
    next_token_loss(logits, tokens)
    assert torch.equal(logits, logits_before)
    assert torch.equal(tokens, tokens_before)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(min_value=1, max_value=4),
    pos=st.integers(min_value=2, max_value=8),
    d_vocab=st.integers(min_value=2, max_value=20),
    scale=st.floats(min_value=0.1, max_value=20.0),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_losses_match_f_cross_entropy_property(
    batch: int, pos: int, d_vocab: int, scale: float, seed: int
) -> None:
    logits, tokens = _data(batch, pos, d_vocab, seed=seed)
    logits = scale * logits
    per_position = cross_entropy(logits, tokens)
    assert per_position.shape == (batch, pos)
    assert (per_position >= 0).all()
    torch.testing.assert_close(
        per_position, _reference_per_position(logits, tokens), atol=1e-4, rtol=RTOL
    )
    torch.testing.assert_close(
        next_token_loss(logits, tokens), _reference_next_token(logits, tokens), atol=1e-4, rtol=RTOL
    )
