"""Defaults give way to the user's flags: a setting the user did not give never refuses one
they did. Derived settings scale to the flags given; a contradiction between two flags
the user gave is refused with one line naming both."""

from __future__ import annotations

from typing import Any

import pytest

from tfs_decoder.training.config import ConfigError
from tfs_decoder.training.flags import train_config_from_args

# (flags the user gave, the step count a time budget chose or None, expected settings of
# the resolved config). time_budget is in minutes, 0 = none.
GIVE_WAY: list[tuple[dict[str, Any], int | None, dict[str, Any]]] = [
    # no flags: 10 minutes, the count fitted to them, the usual derived values
    ({}, 1000, {"time_budget": 10.0, "max_steps": 1000, "warmup_steps": 100,
                "eval_interval": 100, "eval_steps": 20, "min_lr": 5e-4}),
    # a short --max-steps: no budget, and warmup, evaluation and its batches scale down
    ({"max_steps": 8}, None, {"time_budget": 0.0, "max_steps": 8, "warmup_steps": 0,
                              "eval_interval": 1, "eval_steps": 2}),
    ({"max_steps": 50}, None, {"warmup_steps": 5, "eval_interval": 5, "eval_steps": 10}),
    ({"max_steps": 5000}, None, {"time_budget": 0.0, "warmup_steps": 100,
                                 "eval_interval": 100, "eval_steps": 20}),
    # a small --lr: the cosine ends at a tenth of it, not at the default 5e-4
    ({"lr": 1e-4}, 1000, {"lr": 1e-4, "min_lr": 1e-5}),
    # a preset's step-based settings give way to --max-steps (gpt2-8l warms up 200 steps)
    ({"preset": "gpt2-8l", "max_steps": 100}, None, {"warmup_steps": 10, "eval_interval": 10,
                                                     "eval_steps": 20}),
    ({"preset": "gpt2-8l", "lr": 1e-3}, None, {"min_lr": 1e-4, "warmup_steps": 200}),
    ({"preset": "smoke", "max_steps": 4}, None, {"warmup_steps": 0, "eval_interval": 1}),
    # flags the user gave stay as given
    ({"max_steps": 8, "warmup_steps": 8, "eval_interval": 3, "eval_steps": 1}, None,
     {"warmup_steps": 8, "eval_interval": 3, "eval_steps": 1}),
    ({"max_steps": 8, "time_budget": 2.0}, None, {"time_budget": 2.0, "max_steps": 8}),
    ({"lr": 1e-3, "min_lr": 1e-3}, 1000, {"min_lr": 1e-3}),
    # a --warmup-steps longer than the steps the budget fits is cut to them
    ({"warmup_steps": 300}, 120, {"warmup_steps": 120, "max_steps": 120}),
    ({"time_budget": 3.0}, 200, {"time_budget": 3.0, "warmup_steps": 20, "eval_interval": 20}),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "fitted", "expected"), GIVE_WAY)
def test_defaults_give_way_to_the_flags_given(
    flags: dict[str, Any], fitted: int | None, expected: dict[str, Any]
) -> None:
    config = train_config_from_args(flags).resolved(fitted)
    config.validate()
    got = {name: getattr(config, name) for name in expected}
    assert got == pytest.approx(expected)
    for name, value in flags.items():
        if name != "preset" and not (name == "warmup_steps" and fitted is not None):
            assert getattr(config, name) == value


# Contradictions between two flags the user gave: refused, naming both.
CONTRADICTIONS = [
    ({"max_steps": 10, "warmup_steps": 20}, r"--warmup-steps: .*--max-steps=10"),
    ({"lr": 1e-3, "min_lr": 1e-2}, r"--min-lr: .*--lr=0\.001"),
    ({"d_model": 30, "n_heads": 4}, r"--n-heads: .*--d-model=30"),
]


@pytest.mark.parametrize(("flags", "match"), CONTRADICTIONS)
def test_contradicting_flags_are_refused_naming_both(flags: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        train_config_from_args(flags)


def test_the_budget_applies_only_without_max_steps() -> None:
    assert train_config_from_args({}).budget_seconds() == 600
    assert train_config_from_args({"max_steps": 8}).budget_seconds() is None
    assert train_config_from_args({"time_budget": 0.5}).budget_seconds() == 30
    assert train_config_from_args({"time_budget": 0.0}).budget_seconds() is None
    assert train_config_from_args({"preset": "gpt2-8l"}).budget_seconds() is None
