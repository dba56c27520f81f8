"""The time budget of a run: measure what a step costs, fit the step count to the budget,
and end the run early when the rest would not fit.

A run with a budget of ``B`` seconds and no ``max_steps`` first times a few training steps
on its first batches (then puts weights and optimizer state back as they were), one
validation batch and a few generated tokens.
:func:`steps_within` then picks the largest step count whose steps, evaluations and
closing sample fit in what is left of ``B`` after a safety share. The count becomes the
run's ``max_steps`` before step 0, so the cosine schedule is fitted to it and a resumed
run continues exactly the same schedule.

Speed drifts (other programs, thermal limits), so :class:`Deadline` also watches the
clock: when the next step and the run's ending would pass ``B``, the run ends early.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.device import autocast
from tfs_decoder.training.evaluate import generate

# Timed steps of the probe, after one untimed (allocations, torch.compile). A fixed count,
# so that under DDP every rank runs the same collectives.
PROBE_STEPS = 4
# Tokens generated to time the closing sample.
PROBE_TOKENS = 8
# The share of the budget kept free for what the measurement misses (checkpoints, the
# plot, slower stretches) and the seconds kept for the interpreter's start and exit.
SAFETY_SHARE = 0.03
SAFETY_S = 5.0
# What the deadline keeps for the interpreter's exit (and, where the process's age cannot
# be read, its start).
DEADLINE_SLACK_S = 3.0


def process_age_s() -> float:
    """Seconds since this process started, so that ``tfs train``'s budget counts the
    interpreter's start and torch's import too (read from ``/proc`` on Linux; elsewhere 0,
    and the budget counts from the call).

    ``/proc/self/stat``'s 22nd field is the start in clock ticks after boot, and
    ``/proc/uptime`` the seconds since boot.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as uptime:
            now = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, now - ticks / os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True)
class Costs:
    """Measured seconds of the parts of a run.

    Attributes:
        step_s: one optimizer step (``grad_accum`` micro-batches).
        eval_batch_s: one validation batch, forward only.
        token_s: one generated token of the closing sample.
    """

    step_s: float
    eval_batch_s: float
    token_s: float


def measure_costs(
    train_step: Callable[[int], object],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    val_batch: Tensor,
    *,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Costs:
    """Time ``train_step`` (a whole optimizer step, given the step index) on the first
    training batches, a forward pass of ``val_batch`` and :data:`PROBE_TOKENS` generated
    tokens, then put the weights and the optimizer state back as they were, bit for bit."""
    weights = {name: value.detach().clone() for name, value in model.state_dict().items()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    try:
        train_step(0)
        started = _now(device)
        for index in range(1, PROBE_STEPS + 1):
            train_step(index)
        step_s = (_now(device) - started) / PROBE_STEPS
    finally:
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    try:
        with torch.no_grad(), autocast(device, dtype):
            started = _now(device)
            model(val_batch.to(device))
            eval_batch_s = _now(device) - started
            started = _now(device)
            # A validation window is n_ctx tokens long.
            generate(model, val_batch[:1, :1].to(device), PROBE_TOKENS, n_ctx=val_batch.shape[1])
            token_s = (_now(device) - started) / PROBE_TOKENS
    finally:
        model.train()
    return Costs(step_s, eval_batch_s, token_s)


def run_seconds(n: int, costs: Costs, config: TrainConfig) -> float:
    """The seconds of ``n`` steps, their evaluations (the ``eval_interval`` and
    ``eval_steps`` :meth:`TrainConfig.resolved` derives for ``n``) and the closing sample."""
    resolved = config.resolved(n)
    assert resolved.eval_interval is not None
    assert resolved.eval_steps is not None
    evaluations = n // resolved.eval_interval + 1
    eval_s = evaluations * resolved.eval_steps * costs.eval_batch_s
    return n * costs.step_s + eval_s + config.sample_tokens * costs.token_s


def steps_within(budget_s: float, spent_s: float, costs: Costs, config: TrainConfig) -> int:
    """The most steps ``n`` whose :func:`run_seconds` fit in ``budget_s - spent_s`` less
    the safety margins; ``0`` if none does."""
    left = budget_s * (1.0 - SAFETY_SHARE) - SAFETY_S - spent_s
    low, high = 0, max(1, int(left / max(costs.step_s, 1e-9)) + 1)
    while low < high:  # run_seconds grows with n: the largest n that fits in what is left
        middle = (low + high + 1) // 2
        if run_seconds(middle, costs, config) <= left:
            low = middle
        else:
            high = middle - 1
    return low


class Deadline:
    """Says when a run must end early to finish within its budget.

    It keeps time for the next step and its evaluation, the closing evaluation and sample
    (as :class:`Costs` measured them), the slowest checkpoint save seen so far, and the
    interpreter's start and exit. It is looser than :func:`steps_within`'s plan, so it only
    ends a run that is slower than the probe measured.
    """

    def __init__(self, budget_s: float, costs: Costs, config: TrainConfig) -> None:
        assert config.eval_steps is not None
        self.budget_s = budget_s
        eval_s = config.eval_steps * costs.eval_batch_s
        self.ending_s = 2 * eval_s + config.sample_tokens * costs.token_s + DEADLINE_SLACK_S
        self.step_s = costs.step_s
        self.slowest_save_s = 0.0

    def note_step(self, seconds: float) -> None:
        """The latest measured seconds per step."""
        self.step_s = seconds

    def note_save(self, seconds: float) -> None:
        self.slowest_save_s = max(self.slowest_save_s, seconds)

    def passed(self, elapsed_s: float) -> bool:
        """Whether one more step after ``elapsed_s`` seconds would end the run late."""
        need = self.step_s + self.ending_s + self.slowest_save_s
        return elapsed_s + need > self.budget_s


def _now(device: torch.device) -> float:
    """The clock, after the device has finished the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter()
