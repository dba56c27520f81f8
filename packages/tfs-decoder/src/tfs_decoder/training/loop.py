"""The steps of a training run: gradient accumulation, logging, evaluation, checkpoints,
Ctrl-C and the time budget's deadline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tfs_decoder.loss import cross_entropy
from tfs_decoder.training.budget import Deadline
from tfs_decoder.training.checkpoint import rng_state, save_checkpoint
from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.data import RunData
from tfs_decoder.training.device import autocast
from tfs_decoder.training.distributed import DistInfo, all_reduce_sum
from tfs_decoder.training.errors import TfsError
from tfs_decoder.training.evaluate import evaluate
from tfs_decoder.training.interrupt import TrainingInterrupted, deferred_interrupt
from tfs_decoder.training.optim import lr_at
from tfs_decoder.training.plot import plot_losses, read_metrics
from tfs_decoder.training.progress import ProgressBar
from tfs_decoder.training.state import RunState

METRICS_FILE = "metrics.jsonl"
PNG_FILE = "loss.png"


@dataclass
class Run:
    """Everything a training run holds fixed while its steps run.

    Attributes:
        config: the settings, resolved (no field left at ``None``).
        train_model: ``state.model`` as trained: wrapped in DDP and/or ``torch.compile``.
        ddp: the DDP wrapper, if any.
        val_windows: the fixed validation batches, on ``device``.
        started: ``time.perf_counter()`` when this process's run began.
    """

    config: TrainConfig
    info: DistInfo
    device: torch.device
    dtype: torch.dtype | None
    data: RunData
    state: RunState
    train_model: nn.Module
    ddp: DistributedDataParallel | None
    val_windows: list[tuple[Tensor, Tensor]]
    out: Path
    started: float

    def elapsed(self) -> float:
        """Seconds of this run and the runs it resumed."""
        return self.state.previous_elapsed + time.perf_counter() - self.started

    def tokens_per_step(self) -> int:
        """Training tokens of one optimizer step, all processes together."""
        config = self.config
        return config.batch_size * config.n_ctx * config.grad_accum * self.info.world_size

    def evaluate(self) -> float:
        return evaluate(
            self.state.model, self.val_windows, device=self.device, dtype=self.dtype,
            info=self.info,
        )  # fmt: skip

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` so far."""
        path = self.out / METRICS_FILE
        return read_metrics(path) if path.exists() else []

    def plot(self) -> Path:
        """Draw ``loss.png`` from ``metrics.jsonl`` (rank 0)."""
        config = self.config
        title = (
            f"{config.n_layers} layers, d_model {config.d_model}, n_ctx {config.n_ctx}, "
            f"{config.tokenizer} tokens"
        )
        return plot_losses(self.metrics(), self.out / PNG_FILE, title=title)

    def save(self, step: int) -> Path:
        """Write a checkpoint of ``step`` into ``out`` (call on rank 0 only)."""
        state = {
            "optimizer": self.state.optimizer.state_dict(),
            "elapsed_s": self.elapsed(),
            "world_size": self.info.world_size,
            "data_sha256": self.data.text_sha256,
            "rng": rng_state(),
        }
        return save_checkpoint(
            self.out,
            step=step,
            model=self.state.model,
            model_config=self.state.model_config,
            train_config=dataclasses.asdict(self.config),
            tokenizer=self.data.tokenizer.to_dict(),
            state=state,
        )


class TrainingLoop:
    """Runs the steps of a :class:`Run` and keeps what they measured.

    Attributes:
        step: optimizer steps completed.
        val_loss: the latest validation loss, ``None`` if none since the last logged step.
        train_time: seconds spent in training steps in this process.
        last_checkpoint: the newest checkpoint directory (rank 0; ``None`` elsewhere).
        save_times: seconds each checkpoint save of this process took.
        ended_early: the deadline ended the run before its last step.
    """

    def __init__(self, run: Run, bar: ProgressBar, deadline: Deadline | None) -> None:
        self.run = run
        self.bar = bar
        self.deadline = deadline
        self.step = run.state.start_step
        self.val_loss: float | None = None
        self.train_time = 0.0
        self.last_checkpoint = run.state.resumed_from if run.info.is_main else None
        self.save_times: list[float] = []
        self.ended_early = False
        self._saved_step = self.step if run.state.resumed_from is not None else -1
        self._last_save = run.started
        self._window_time = 0.0
        self._window_steps = 0
        self._window_loss = torch.zeros((), device=run.device)
        self._tokens_per_s = 0.0
        self._last_loss: float | None = None

    def run_steps(self, stop: int) -> None:
        """Train steps ``step + 1 .. stop`` (fewer if the deadline passes).

        Raises:
            TrainingInterrupted: Ctrl-C; the step completed last is saved first (rank 0).
            TfsError: the loss or the weights are no longer finite.
        """
        config = self.run.config
        self.run.state.model.train()
        self.bar.start(self.step)
        with deferred_interrupt() as interrupt:
            for step_index in range(self.step, stop):
                t0 = time.perf_counter()
                lr = self._train_step(step_index)
                self.step = step_index + 1
                save_due, late = self._clock_says()
                is_last = self.step == stop or late
                self._log(lr, t0, is_last)
                self.bar.update(self.step, loss=self._last_loss,
                                tokens_per_s=self._tokens_per_s or None)  # fmt: skip
                every = config.checkpoint_interval
                if is_last or save_due or bool(every and self.step % every == 0):
                    self._checkpoint(plot_after=not is_last)
                if interrupt.set:
                    self._save_on_interrupt()
                if late:
                    self.ended_early = self.step < stop
                    break
        self.bar.close()

    def _train_step(self, step_index: int) -> float:
        """One optimizer step; returns its learning rate."""
        config = self.run.config
        assert config.max_steps is not None
        assert config.warmup_steps is not None
        assert config.min_lr is not None
        lr = lr_at(
            step_index, lr=config.lr, min_lr=config.min_lr, warmup_steps=config.warmup_steps,
            max_steps=config.max_steps,
        )  # fmt: skip
        self._window_loss += train_step(self.run, step_index, lr)
        self._window_steps += 1
        return lr

    def _log(self, lr: float, t0: float, is_last: bool) -> None:
        """At a logging step: the window's mean loss and speed, an evaluation when due, a
        ``metrics.jsonl`` line (rank 0). The window's time stops before the evaluation."""
        run, config, step = self.run, self.run.config, self.step
        assert config.eval_interval is not None
        do_eval = step % config.eval_interval == 0 or is_last
        if not (step % config.log_interval == 0 or do_eval):
            self._window_time += time.perf_counter() - t0
            return
        # .item() waits for the device, so the window's time is its true compute time.
        all_reduce_sum(self._window_loss, run.info)
        loss = self._window_loss.item() / self._window_steps / run.info.world_size
        self._window_time += time.perf_counter() - t0
        self.train_time += self._window_time
        self._tokens_per_s = (
            run.tokens_per_step() * self._window_steps / max(self._window_time, 1e-9)
        )
        if self.deadline is not None:
            self.deadline.note_step(self._window_time / self._window_steps)
        verify_finite(loss, step)
        self._last_loss = loss
        self.val_loss = run.evaluate() if do_eval else None
        if run.info.is_main:
            record = {
                "step": step, "train_loss": loss, "val_loss": self.val_loss, "lr": lr,
                "tokens_per_s": self._tokens_per_s, "elapsed_s": run.elapsed(),
                "world_size": run.info.world_size,
            }  # fmt: skip
            with open(run.out / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.val_loss is not None:
            bits = self.val_loss * run.data.tokens_per_char / math.log(2)
            self.bar.write(
                f"step {step}: train loss {loss:.4f}, val loss {self.val_loss:.4f} "
                f"({bits:.3f} bits/char)"
            )
        self._window_loss.zero_()
        self._window_steps = 0
        self._window_time = 0.0

    def _clock_says(self) -> tuple[bool, bool]:
        """``(a checkpoint is due by time, the deadline has passed)``: rank 0's clock
        decides, so that every rank saves and stops at the same step."""
        minutes = self.run.config.checkpoint_minutes
        if minutes <= 0 and self.deadline is None:
            return False, False  # no clock to read: no collective either (same on every rank)
        now = time.perf_counter()
        save_due = minutes > 0 and now - self._last_save >= minutes * 60
        late = self.deadline is not None and self.deadline.passed(self.run.elapsed())
        if not self.run.info.enabled:
            return save_due, late
        flags = torch.tensor(
            [float(save_due), float(late)] if self.run.info.is_main else [0.0, 0.0],
            device=self.run.device,
        )
        all_reduce_sum(flags, self.run.info)
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def _checkpoint(self, *, plot_after: bool) -> None:
        """Verify the loss and weights (every rank), then save (rank 0)."""
        self._verify_before_save(self.run.info)
        if self.run.info.is_main:
            self._save()
            if plot_after:
                self.run.plot()
        self._last_save = time.perf_counter()

    def _save(self) -> None:
        started = time.perf_counter()
        self.last_checkpoint = self.run.save(self.step)
        self._saved_step = self.step
        seconds = time.perf_counter() - started
        self.save_times.append(seconds)
        if self.deadline is not None:
            self.deadline.note_save(seconds)

    def _save_on_interrupt(self) -> None:
        self.bar.close()
        if self.run.info.is_main and self._saved_step != self.step:
            # Only rank 0 is here: no collective, its own unlogged steps only.
            self._verify_before_save(None)
            self._save()
        raise TrainingInterrupted(self.step, self.last_checkpoint)

    def _verify_before_save(self, info: DistInfo | None) -> None:
        """Verify what the logging steps have not yet verified, the loss of the steps since
        the last log (summed over the ranks of ``info``; this rank's alone when ``None``),
        and the weights, so that a diverged model never reaches a checkpoint."""
        if self._window_steps:
            loss = self._window_loss.clone()
            ranks = 1
            if info is not None:
                all_reduce_sum(loss, info)
                ranks = info.world_size
            verify_finite(loss.item() / self._window_steps / ranks, self.step)
        verify_finite_weights(self.run.state.model, self.step)


def train_step(run: Run, step_index: int, lr: float) -> Tensor:
    """Optimizer step ``step_index`` at learning rate ``lr``, over ``grad_accum``
    micro-batches; returns its mean loss (on the device, not synchronised)."""
    config = run.config
    for group in run.state.optimizer.param_groups:
        group["lr"] = lr
    torch.manual_seed(dropout_seed(config.seed, step_index, run.info.rank))
    step_loss = torch.zeros((), device=run.device)
    for micro in range(config.grad_accum):
        x, y = run.data.sampler.batch(step_index * config.grad_accum + micro)
        x = x.to(run.device, non_blocking=True)
        y = y.to(run.device, non_blocking=True)
        # Gradients are averaged across ranks only after the last micro-batch.
        last_micro = micro == config.grad_accum - 1
        sync = run.ddp.no_sync() if run.ddp is not None and not last_micro else nullcontext()
        with sync:
            with autocast(run.device, run.dtype):
                logits = run.train_model(x)
            loss = cross_entropy(logits, y).mean()
            (loss / config.grad_accum).backward()  # type: ignore[no-untyped-call]
        step_loss += loss.detach()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.state.model.parameters(), config.grad_clip)
    run.state.optimizer.step()
    run.state.optimizer.zero_grad(set_to_none=True)
    return step_loss / config.grad_accum


def verify_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TfsError(
            f"training diverged: the loss is {loss} at step {step}; "
            "try a lower --lr (or more --warmup-steps)"
        )


def verify_finite_weights(model: nn.Module, step: int) -> None:
    """Non-finite weights end the run before they can reach a checkpoint. Under DDP the
    weights are the same on every rank, so every rank reaches the same verdict."""
    with torch.no_grad():
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if not finite:
        raise TfsError(
            f"training diverged: the weights are not finite after step {step}; "
            "try a lower --lr (or more --warmup-steps)"
        )


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG's seed for step ``step`` on ``rank``: a pure function, so a resumed
    run draws the same dropout masks as an uninterrupted one, and ranks draw different ones."""
    digest = hashlib.blake2b(f"tfs-dropout:{seed}:{step}:{rank}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1
