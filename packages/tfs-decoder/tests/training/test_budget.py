"""The time budget: the step count fitted to it, the deadline, and checkpoints by time."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import tfs_decoder.training.loop as loop_module
import tfs_decoder.training.trainer as trainer_module
from tfs_decoder.training.budget import Costs, Deadline, process_age_s, steps_within
from tfs_decoder.training.checkpoint import save_checkpoint
from tfs_decoder.training.cli import main
from tfs_decoder.training.config import ConfigError, TrainConfig
from tfs_decoder.training.data import load_run_data
from tfs_decoder.training.distributed import DistInfo
from tfs_decoder.training.load import load_checkpoint
from tfs_decoder.training.trainer import train

# Training runs call the same forwards thousands of times; their shapes are checked at
# runtime by the model's own tests (test_decoder, test_block, ...), and here the checks
# only doubled each test's time (test_train: 26 s against 11 s).
pytestmark = pytest.mark.usefixtures("without_runtime_type_checks")

COSTS = Costs(step_s=0.5, eval_batch_s=0.1, token_s=0.01)
IMPORTED = time.perf_counter()  # this process started before this module was imported


def small_run(tmp_path: Path, name: str, **changes: Any) -> TrainConfig:
    """A 2-layer model on 2,000 random words: a step takes milliseconds."""
    corpus = tmp_path / "words.txt"
    if not corpus.exists():
        rng = random.Random(0)
        words = ("cat", "dog", "bird", "fish")
        corpus.write_text(" ".join(rng.choice(words) for _ in range(2000)), encoding="utf-8")
    settings: dict[str, Any] = {
        "data": str(corpus), "out": str(tmp_path / name), "d_model": 16, "n_layers": 2,
        "n_heads": 2, "d_mlp": 32, "n_ctx": 16, "batch_size": 4, "dropout": 0.1,
        "sample_tokens": 8, "seed": 5, **changes,
    }  # fmt: skip
    return TrainConfig(**settings)


def test_steps_within_fills_the_budget_less_the_margins() -> None:
    """Worked by hand: 600 s * 0.97 - 5 s - 10 s spent = 567 s. 1,080 steps of 0.5 s take
    540 s, their 11 evaluations (every 100 steps and at the end) of 20 batches of 0.1 s
    22 s, the 500-token sample 5 s: 567 s. One more step does not fit."""
    assert steps_within(600.0, 10.0, COSTS, TrainConfig()) == 1080
    assert steps_within(300.0, 10.0, COSTS, TrainConfig()) < 1080 / 2
    assert steps_within(20.0, 10.0, COSTS, TrainConfig()) == 0


def test_the_deadline_keeps_time_for_the_ending() -> None:
    """The ending: the next step 0.5 s, its and the closing evaluation 2 * 2 s, the sample
    5 s, 3 s for the interpreter: 12.5 s before the 600 s budget."""
    deadline = Deadline(600.0, COSTS, TrainConfig().resolved(1000))
    assert not deadline.passed(587.4)
    assert deadline.passed(587.6)
    deadline.note_save(2.0)  # a slow checkpoint save moves it earlier
    assert deadline.passed(586.0)


def test_a_fitted_run_equals_the_same_run_with_its_step_count_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's steps leave no trace (weights, AdamW state, data order and dropout are
    as before), and the count the budget chose is saved with the checkpoint."""
    monkeypatch.setattr(trainer_module, "steps_within", lambda *args: 9)
    fitted = train(small_run(tmp_path, "fitted", time_budget=5.0), progress=False)
    given = train(small_run(tmp_path, "given", max_steps=9), progress=False)
    assert (fitted.step, fitted.max_steps, fitted.ended_early) == (9, 9, False)
    assert fitted.val_loss == given.val_loss
    assert fitted.sample == given.sample
    assert fitted.checkpoint is not None
    assert given.checkpoint is not None
    a, b = load_checkpoint(fitted.checkpoint), load_checkpoint(given.checkpoint)
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name
    assert (a.train_config["max_steps"], a.train_config["time_budget"]) == (9, 5.0)
    assert (b.train_config["max_steps"], b.train_config["time_budget"]) == (9, 0.0)


def test_a_fitted_count_makes_at_most_max_epochs_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many steps the budget would allow, a fitted count stops at ``max_epochs``
    passes over the training tokens; a ``max_steps`` given is never shortened."""
    monkeypatch.setattr(trainer_module, "steps_within", lambda *args: 10**6)
    config = small_run(tmp_path, "epochs", time_budget=5.0, max_epochs=0.1, sample_tokens=0)
    train_tokens = load_run_data(config, DistInfo(), None).train_ids.numel()
    result = train(config, progress=False)
    assert result.max_steps == math.ceil(0.1 * train_tokens / (4 * 16))
    given = small_run(tmp_path, "given", max_steps=12, max_epochs=0.01, sample_tokens=0)
    assert train(given, progress=False).step == 12


def test_the_deadline_ends_a_run_early_with_a_checkpoint(tmp_path: Path) -> None:
    config = small_run(tmp_path, "late", max_steps=1_000_000, time_budget=0.1)
    result = train(config, progress=False)
    assert result.ended_early
    assert 0 < result.step < 1_000_000
    assert result.elapsed_s < 6.0
    assert result.checkpoint is not None
    assert load_checkpoint(result.checkpoint).step == result.step


def test_no_step_fits_in_a_tiny_budget(tmp_path: Path) -> None:
    """The refusal says what the budget keeps besides the step: the closing evaluation and
    sample, and what to change."""
    with pytest.raises(
        ConfigError, match=r"--time-budget: expected enough minutes for one step"
    ) as refused:
        train(small_run(tmp_path, "tiny", time_budget=0.001), progress=False)
    assert "-token sample about" in str(refused.value)
    assert "or fewer --sample-tokens" in str(refused.value)


def test_the_budget_counts_from_the_start_the_caller_gives(tmp_path: Path) -> None:
    """A 1-minute budget of which 59 s went before the call (as torch's import goes before
    ``tfs train``'s) leaves no room for a step."""
    config = small_run(tmp_path, "late-start", time_budget=1.0)
    with pytest.raises(ConfigError, match=r"and (59|60) s have gone on"):
        train(config, progress=False, started=time.perf_counter() - 59.0)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_the_process_age_covers_everything_since_the_process_started() -> None:
    age = process_age_s()
    assert time.perf_counter() - IMPORTED <= age + 0.02  # /proc counts in 10 ms ticks
    assert age < float(Path("/proc/uptime").read_text().split()[0])


def test_tfs_train_counts_its_budget_from_the_process_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(trainer_module, "train", lambda config, **kwargs: seen.update(kwargs))
    assert main(["train", "--data", str(tmp_path / "any.txt"), "--out", str(tmp_path)]) == 0
    assert seen["started"] < IMPORTED  # not the call: the process's start
    assert abs(seen["started"] - (time.perf_counter() - process_age_s())) < 0.05


def test_no_budget_and_no_step_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--max-steps: expected a number of steps when"):
        train(small_run(tmp_path, "none", time_budget=0.0), progress=False)


@pytest.mark.parametrize(
    ("changes", "saved_steps"),
    [
        ({"checkpoint_minutes": 1e-9}, list(range(1, 7))),  # due after every step
        ({"checkpoint_minutes": 0.0}, [6]),  # only the last
        ({"checkpoint_minutes": 0.0, "checkpoint_interval": 4}, [4, 6]),
        ({"checkpoint_minutes": 10.0}, [6]),  # not due in a run of a second
    ],
)
def test_checkpoints_come_by_wall_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], saved_steps: list[int]
) -> None:
    saved: list[int] = []

    def recording_save(out: Path, *, step: int, **kwargs: Any) -> Path:
        saved.append(step)
        return save_checkpoint(out, step=step, **kwargs)

    monkeypatch.setattr(loop_module, "save_checkpoint", recording_save)
    train(small_run(tmp_path, "ckpt", max_steps=6, **changes), progress=False)
    assert saved == saved_steps
