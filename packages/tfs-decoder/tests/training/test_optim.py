"""AdamW parameter groups and the learning-rate schedule."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfs_decoder import Decoder, DecoderConfig
from tfs_decoder.training.optim import build_optimizer, lr_at, param_groups


def tiny_decoder() -> Decoder:
    torch.manual_seed(0)
    return Decoder(
        DecoderConfig(d_vocab=11, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_layers=2, n_ctx=6)
    )


def test_param_groups_decay_matrices_only() -> None:
    """Matrices decay; biases (also the per-head [head, d_head] b_Q/b_K/b_V) and LayerNorm
    parameters do not."""
    model = tiny_decoder()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1
    assert no_decay["weight_decay"] == 0.0
    expected_decay = {"embed.W_E", "pos_embed.W_pos", "unembed.W_U"} | {
        f"blocks.{i}.{name}"
        for i in range(2)
        for name in (
            "attn.W_Q",
            "attn.W_K",
            "attn.W_V",
            "attn.W_O",
            "mlp.W_in",
            "mlp.W_out",
        )
    }
    expected_no_decay = {"ln_final.w", "ln_final.b", "unembed.b_U"} | {
        f"blocks.{i}.{name}"
        for i in range(2)
        for name in (
            "ln1.w",
            "ln1.b",
            "ln2.w",
            "ln2.b",
            "attn.b_Q",
            "attn.b_K",
            "attn.b_V",
            "attn.b_O",
            "mlp.b_in",
            "mlp.b_out",
        )
    }
    assert set(decay["names"]) == expected_decay
    assert set(no_decay["names"]) == expected_no_decay
    # Every parameter is in exactly one group, and the tensors are the model's own.
    named = dict(model.named_parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    for group in (decay, no_decay):
        for name, parameter in zip(group["names"], group["params"], strict=True):
            assert parameter is named[name]
    assert all(p.ndim >= 2 for p in decay["params"])
    assert named["blocks.0.attn.b_Q"].ndim == 2  # a bias despite its two dimensions


def test_param_groups_follow_ndim_for_other_modules() -> None:
    """A module outside tfs (composition allows any): ndim >= 2 decays, 1-D does not."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Conv1d(4, 2, 3))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["names"] == ["0.weight", "1.weight"]
    assert no_decay["names"] == ["0.bias", "1.bias"]


def test_param_groups_skip_frozen_parameters() -> None:
    model = tiny_decoder()
    model.embed.W_E.requires_grad_(False)
    model.ln_final.w.requires_grad_(False)
    names = [n for group in param_groups(model, 0.1) for n in group["names"]]
    assert "embed.W_E" not in names
    assert "ln_final.w" not in names
    assert len(names) == len(list(model.parameters())) - 2


def test_param_groups_rejects_negative_weight_decay() -> None:
    with pytest.raises(ValueError, match=r"weight_decay: expected a float >= 0, got -0\.1"):
        param_groups(tiny_decoder(), -0.1)


def test_build_optimizer_is_adamw_with_decoupled_decay_on_matrices() -> None:
    """One step with zero gradients: Adam's update is 0/(0 + eps) = 0, so only AdamW's
    decoupled decay acts, p <- p * (1 - lr * wd) on matrices and nothing on the rest."""
    model = tiny_decoder()
    lr, wd = 0.01, 0.5
    optimizer = build_optimizer(model, lr, wd)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(group["betas"] == (0.9, 0.95) for group in optimizer.param_groups)
    assert all(group["fused"] for group in optimizer.param_groups)  # one kernel on CPU
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, parameter in model.named_parameters():
        expected = before[name] * (1 - lr * wd) if parameter.ndim >= 2 else before[name]
        torch.testing.assert_close(parameter.detach(), expected, atol=1e-7, rtol=0)


def test_build_optimizer_rejects_non_positive_lr() -> None:
    with pytest.raises(ValueError, match=r"lr: expected a positive float, got 0\.0"):
        build_optimizer(tiny_decoder(), 0.0, 0.1)


SCHEDULE: dict[str, Any] = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "max_steps": 110}


def test_lr_at_warmup_is_linear_from_zero() -> None:
    assert lr_at(0, **SCHEDULE) == 0.0
    assert lr_at(5, **SCHEDULE) == pytest.approx(5e-4, abs=1e-15)
    assert lr_at(1, **SCHEDULE) == pytest.approx(1e-4, abs=1e-15)


def test_lr_at_cosine_points() -> None:
    assert lr_at(10, **SCHEDULE) == pytest.approx(1e-3, abs=1e-15)  # warmup end: the peak
    assert lr_at(60, **SCHEDULE) == pytest.approx(5.5e-4, abs=1e-15)  # halfway: the mean
    quarter = 1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4))
    assert lr_at(35, **SCHEDULE) == pytest.approx(quarter, abs=1e-15)
    assert lr_at(110, **SCHEDULE) == pytest.approx(1e-4, abs=1e-15)  # the end: min_lr
    assert lr_at(500, **SCHEDULE) == 1e-4  # past the end it stays there


def test_lr_at_without_warmup_starts_at_lr() -> None:
    assert lr_at(0, lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=4) == 2.0
    assert lr_at(2, lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=4) == pytest.approx(1.0)
    assert lr_at(4, lr=2.0, min_lr=0.0, warmup_steps=0, max_steps=4) == 0.0


@settings(max_examples=25, deadline=None)
@given(
    warmup=st.integers(0, 50),
    extra=st.integers(0, 200),
    lr=st.floats(1e-5, 1.0),
    min_fraction=st.floats(0.0, 1.0),
)
def test_lr_at_rises_then_falls_within_bounds(
    warmup: int, extra: int, lr: float, min_fraction: float
) -> None:
    max_steps = warmup + extra
    min_lr = lr * min_fraction
    rates = [
        lr_at(s, lr=lr, min_lr=min_lr, warmup_steps=warmup, max_steps=max_steps)
        for s in range(max_steps + 3)
    ]
    assert all(0.0 <= r <= lr * (1 + 1e-12) for r in rates)
    # Rising through the warmup, then falling (at once to min_lr when max_steps == warmup).
    rising, falling = rates[:warmup], rates[warmup:]
    assert all(a <= b for a, b in itertools.pairwise(rising))
    assert all(a >= b - 1e-15 for a, b in itertools.pairwise(falling))
    assert all(r >= min_lr * (1 - 1e-12) for r in falling)


@pytest.mark.parametrize(
    ("step", "kwargs", "match"),
    [
        (-1, SCHEDULE, r"step: expected an int >= 0, got -1"),
        (0, {**SCHEDULE, "warmup_steps": -2}, r"warmup_steps: expected an int >= 0, got -2"),
        (0, {**SCHEDULE, "max_steps": 5}, r"max_steps: expected >= warmup_steps=10, got 5"),
    ],
)
def test_lr_at_rejects_bad_arguments(step: int, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lr_at(step, **kwargs)
