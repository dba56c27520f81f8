"""The training run behind ``tfs train``: data, model, AdamW, evaluation, checkpoints, sample.

One call of :func:`train` does the whole job:

1. picks the device and precision (``auto``: CUDA with bf16 autocast where supported, else
   MPS, else CPU in float32) and joins the process group when ``torchrun`` started several
   processes (``WORLD_SIZE > 1``: DDP, ``gloo`` on CPU, ``nccl`` on CUDA);
2. loads the text, fits the tokenizer (or takes the checkpoint's on ``resume``), tokenises
   once and keeps the end of the id stream for validation (:mod:`~.data`);
3. builds the :class:`~tfs_decoder.Decoder` (with the learner's attention, MLP or
   LayerNorm in it, or the learner's whole decoder instead, each run once on a small batch
   before any step: :mod:`~.learner`) and AdamW (weight decay on matrices only)
   (:mod:`~.state`);
4. fixes the step count: ``max_steps``, the resumed checkpoint's, or as many as fit in the
   time budget (:mod:`~.budget`), and derives the settings left at ``None`` from it;
5. trains (:mod:`~.loop`) with gradient accumulation and clipping, the learning rate of
   each step from :func:`~tfs_decoder.training.optim.lr_at` (warmup, cosine); every
   ``eval_interval`` steps measures the mean cross-entropy on fixed validation windows;
   writes ``metrics.jsonl``, checkpoints (every ``checkpoint_minutes`` and
   ``checkpoint_interval`` steps, and at the end), ``loss.png`` and ``sample.txt`` into
   ``out`` (rank 0 only).

Resuming is exact: batch ``s`` is a pure function of ``(seed, s, rank)``
(:class:`~tfs_decoder.training.batches.WindowSampler`), the dropout RNG is re-seeded from
``(seed, s, rank)`` at every step and the checkpoint holds the step count the run chose,
so a run stopped after step ``s`` and resumed computes the same steps ``s + 1, ...`` as one
that never stopped, bit for bit on the same machine.

Faults:

- a non-finite training loss (or non-finite weights) stops the run with a one-line
  :class:`~tfs_decoder.training.errors.TfsError` (``training diverged: ...``). The loss is
  checked at every logging step and, together with the weights, before every checkpoint is
  written, so no checkpoint holds a diverged model: the newest one on disk is the last good
  one.
- Ctrl-C (``SIGINT``) during the training steps ends the run at the end of the step in
  progress: rank 0 writes a checkpoint of that step (the same atomic save as the periodic
  ones) and :class:`TrainingInterrupted` is raised. A second Ctrl-C interrupts at once (the
  save is atomic, so the previous checkpoint stays intact). Under DDP every rank stops at
  the end of its step and only rank 0 saves; ``torchrun`` itself may terminate the workers
  first, in which case the last periodic checkpoint stands. Outside the steps (setup, the
  final evaluation and sample) Ctrl-C raises a plain ``KeyboardInterrupt``, saving nothing.
- a SIGKILL loses at most the steps since the last checkpoint: ``checkpoint_minutes``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tfs_decoder.training.budget import Costs, Deadline, measure_costs, run_seconds, steps_within
from tfs_decoder.training.checkpoint import Checkpoint
from tfs_decoder.training.config import ConfigError, TrainConfig
from tfs_decoder.training.data import load_run_data
from tfs_decoder.training.device import resolve_device, resolve_dtype
from tfs_decoder.training.distributed import DistInfo, broadcast_object, distributed, env_dist_info
from tfs_decoder.training.evaluate import evaluate, sample_text
from tfs_decoder.training.files import write_text_atomic
from tfs_decoder.training.interrupt import TrainingInterrupted
from tfs_decoder.training.learner import (
    absolute_targets,
    describe,
    learner_targets,
    verify_forward,
)
from tfs_decoder.training.load import load_checkpoint
from tfs_decoder.training.loop import METRICS_FILE, Run, TrainingLoop, train_step
from tfs_decoder.training.progress import ProgressBar, format_duration
from tfs_decoder.training.state import build_state

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "evaluate", "train"]

SAMPLE_FILE = "sample.txt"


@dataclass(frozen=True)
class TrainResult:
    """What a finished :func:`train` run reports.

    Attributes:
        out: the run directory.
        step: optimiser steps taken in total (including those before a resume).
        val_loss: final mean validation cross-entropy, nats per token.
        val_bits_per_char: the same per character of validation text, in bits
            (``val_loss * tokens / chars / ln 2``; tokens = chars for the char tokenizer).
        tokens_per_s: training tokens per second in this run, all processes together
            (evaluation, checkpoints and the sample excluded).
        elapsed_s: wall time of the run, including earlier runs it resumed.
        sample: the generated sample text ("" on ranks other than 0 or with no sample).
        png: the loss-curve PNG (``None`` on ranks other than 0).
        checkpoint: the last checkpoint directory (``None`` on ranks other than 0).
        world_size: the number of training processes.
        max_steps: the run's step count (chosen by the time budget when not given).
        ended_early: the time budget ran out before ``max_steps``.
        save_s: mean seconds of this run's checkpoint saves (0 if none; rank 0).
    """

    out: Path
    step: int
    val_loss: float
    val_bits_per_char: float
    tokens_per_s: float
    elapsed_s: float
    sample: str
    png: Path | None
    checkpoint: Path | None = None
    world_size: int = 1
    max_steps: int = 0
    ended_early: bool = False
    save_s: float = 0.0


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    stop_at: int | None = None,
    started: float | None = None,
) -> TrainResult:
    """Train a :class:`~tfs_decoder.Decoder` as ``config`` says; see the module docstring.

    Args:
        config: the settings.
        progress: show the progress line and evaluation results on stderr, then the
            summary and the sample on stdout (rank 0 only). ``False``: silent.
        stop_at: end this run after step ``stop_at`` (checkpoint, evaluation, plot and
            sample as at the end) as if interrupted there; the learning-rate schedule
            still runs to ``max_steps``, so a later ``resume`` continues it exactly.
        started: the ``time.perf_counter()`` reading from which this run's time (its
            budget, ``elapsed_s``) counts; the call itself if ``None``. ``tfs train``
            passes its process's start.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TfsError: a problem the user can fix (data, checkpoint, settings), or a diverged
            run (``training diverged: ...``, the newest checkpoint is the last good one);
            the message is one line naming the flag or file.
        TrainingInterrupted: Ctrl-C during the training steps; the step completed last is
            saved as a checkpoint (rank 0) first. See the module docstring.
    """
    started = time.perf_counter() if started is None else started
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    config.validate()
    # The learner's files, wherever the run's checkpoints are used later (from every rank).
    config = dataclasses.replace(config, **absolute_targets(dataclasses.asdict(config)))
    if stop_at is not None and not 0 <= stop_at <= (config.max_steps or stop_at):
        raise ValueError(
            f"stop_at: expected an int in [0, max_steps={config.max_steps}], got {stop_at}"
        )
    info = env_dist_info()
    device = resolve_device(config.device, info)
    with distributed(info, device):
        return _train(config, info, device, progress=progress, stop_at=stop_at, started=started)


def _train(
    config: TrainConfig, info: DistInfo, device: torch.device, *, progress: bool,
    stop_at: int | None, started: float,
) -> TrainResult:  # fmt: skip
    dtype = resolve_dtype(config.dtype, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # float32 matmuls on tensor cores (TF32)
    checkpoint = load_checkpoint(Path(config.out), map_location="cpu") if config.resume else None
    data = load_run_data(config, info, checkpoint)
    state = build_state(config, data.tokenizer.vocab_size, device, checkpoint)
    learner = learner_targets(dataclasses.asdict(config))
    verify_forward(state.model, state.model_config, learner, device=device, dtype=dtype)
    saved_steps = _saved_max_steps(checkpoint)
    del checkpoint  # the weights now live in the model; free the copies
    ddp, train_model = _wrap(state.model, config, info, device)
    run = Run(
        config, info, device, dtype, data, state, train_model, ddp, [], Path(config.out), started
    )
    deadline = _fix_steps(run, saved_steps)
    config = run.config
    assert config.max_steps is not None
    assert config.eval_steps is not None
    run.val_windows = data.val_windows(config, device, config.eval_steps)
    bar = ProgressBar(
        config.max_steps, enabled=progress and info.is_main, log_interval=config.log_interval
    )
    _start_files(run)
    bar.write(_describe(run))
    loop = TrainingLoop(run, bar, deadline)
    stop = config.max_steps if stop_at is None else max(min(stop_at, config.max_steps), loop.step)
    loop.run_steps(stop)
    return _finish(run, loop, progress=progress)


def _saved_max_steps(checkpoint: Checkpoint | None) -> int | None:
    steps = checkpoint.train_config.get("max_steps") if checkpoint is not None else None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _wrap(
    model: nn.Module, config: TrainConfig, info: DistInfo, device: torch.device
) -> tuple[DistributedDataParallel | None, nn.Module]:
    """The model as trained: in DDP under ``torchrun``, then ``torch.compile`` if asked."""
    ddp: DistributedDataParallel | None = None
    train_model = model
    if info.enabled:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        train_model = ddp
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    return ddp, train_model


def _fix_steps(run: Run, saved_steps: int | None) -> Deadline | None:
    """Resolve ``run.config``: the step count is ``max_steps``, else the resumed run's,
    else the most that fit in the time budget (measured here, rank 0's count for all).
    Returns the deadline that keeps the run within its budget, if it has one."""
    config = run.config
    budget_s = config.budget_seconds()
    steps = config.max_steps if config.max_steps is not None else saved_steps
    if budget_s is None:
        if steps is None:
            raise ConfigError("--max-steps: expected a number of steps when --time-budget is 0")
        run.config = config.resolved(steps)
        return None
    val_batch = run.data.val_windows(config, run.device, 1)[0][0]
    costs: Costs = measure_costs(
        lambda index: train_step(run, index, config.lr), run.state.model, run.state.optimizer,
        val_batch, device=run.device, dtype=run.dtype,
    )  # fmt: skip
    costs = broadcast_object(costs, run.info)
    if steps is None:
        # Rank 0's count for every rank: the ranks' clocks differ.
        steps = broadcast_object(steps_within(budget_s, run.elapsed(), costs, config), run.info)
        steps = min(steps, _epoch_steps(run))
        if steps < 1:
            closing_s = run_seconds(1, costs, config) - costs.step_s
            raise ConfigError(
                f"--time-budget: expected enough minutes for one step and the closing "
                f"evaluation and sample, got {budget_s / 60:g} (a step takes "
                f"{costs.step_s:.2f} s here, the evaluations and the {config.sample_tokens}-"
                f"token sample about {closing_s:.0f} s, and {run.elapsed():.0f} s have gone on "
                f"loading and measuring) — give more minutes, or fewer --sample-tokens"
            )
    run.config = config.resolved(steps)
    return Deadline(budget_s, costs, run.config)


def _epoch_steps(run: Run) -> int:
    """The steps of ``max_epochs`` passes over the training tokens (all ranks together)."""
    config = run.config
    if not config.max_epochs:
        return sys.maxsize
    passes = config.max_epochs * run.data.train_ids.numel()
    return max(1, math.ceil(passes / run.tokens_per_step()))


def _start_files(run: Run) -> None:
    """Create ``out`` and start ``metrics.jsonl`` (rank 0): empty, or cut back to the step
    a resume rewinds to."""
    if not run.info.is_main:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    metrics_path = run.out / METRICS_FILE
    if run.state.start_step > 0:
        kept = [r for r in run.metrics() if int(r.get("step", 0)) <= run.state.start_step]
        write_text_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
    else:
        metrics_path.write_text("", encoding="utf-8")


def _describe(run: Run) -> str:
    """The run's first line: the model, the data, the device and the step count."""
    config, data = run.config, run.data
    parameters = sum(p.numel() for p in run.state.model.parameters())
    count = f"{parameters / 1e6:.2f}M" if parameters >= 1_000_000 else f"{parameters:,}"
    dtype = "float32" if run.dtype is None else str(run.dtype).removeprefix("torch.")
    budget = f", time budget {config.time_budget:g} min" if config.time_budget else ""
    learner = describe(learner_targets(dataclasses.asdict(config)))
    return (
        f"tfs train: {count} parameters ({config.n_layers} layers, d_model {config.d_model}, "
        f"{config.n_heads} heads, n_ctx {config.n_ctx}), vocab {data.tokenizer.vocab_size} "
        f"({config.tokenizer}), {data.train_ids.numel():,} train / {data.val_ids.numel():,} "
        f"val tokens, {run.device} {dtype}, {config.max_steps} steps{budget}"
        + (f", {run.info.world_size} processes" if run.info.enabled else "")
        + (f", resuming at step {run.state.start_step}" if run.state.start_step else "")
        + (f", {learner}" if learner else "")
    )


def _finish(run: Run, loop: TrainingLoop, *, progress: bool) -> TrainResult:
    """The closing evaluation (unless the last step had one), plot and sample."""
    config, main = run.config, run.info.is_main
    val_loss = loop.val_loss if loop.val_loss is not None else run.evaluate()
    png: Path | None = None
    sample = ""
    if main:
        png = run.plot()
        if config.sample_tokens > 0:
            sample = sample_text(
                run.state.model, run.data.tokenizer, prompt=config.sample_prompt,
                n_tokens=config.sample_tokens, seed=config.seed,
                n_ctx=run.state.model_config.n_ctx, device=run.device,
                dtype=run.dtype,
            )  # fmt: skip
            write_text_atomic(run.out / SAMPLE_FILE, sample)
    tokens = run.tokens_per_step() * (loop.step - run.state.start_step)
    assert config.max_steps is not None
    result = TrainResult(
        out=run.out, step=loop.step, val_loss=val_loss,
        val_bits_per_char=val_loss * run.data.tokens_per_char / math.log(2),
        tokens_per_s=tokens / loop.train_time if loop.train_time else 0.0,
        elapsed_s=run.elapsed(), sample=sample, png=png, checkpoint=loop.last_checkpoint,
        world_size=run.info.world_size, max_steps=config.max_steps, ended_early=loop.ended_early,
        save_s=sum(loop.save_times) / len(loop.save_times) if loop.save_times else 0.0,
    )  # fmt: skip
    if progress and main:
        _print_summary(result, config)
    return result


def _print_summary(result: TrainResult, config: TrainConfig) -> None:
    early = ""
    if result.ended_early:
        early = f" (the {config.time_budget:g}-minute budget ended it before {result.max_steps})"
    print(
        f"step {result.step}{early}: val loss {result.val_loss:.4f} nats/token, "
        f"{result.val_bits_per_char:.3f} bits/char; {result.tokens_per_s:,.0f} tokens/s; "
        f"elapsed {format_duration(result.elapsed_s)}; checkpoint save {result.save_s:.2f} s; "
        f"wrote {result.out}",
        file=sys.stderr,
    )
    if result.sample:
        print(
            f"--- sample ({config.sample_tokens} tokens, saved to {result.out / SAMPLE_FILE}) ---"
        )
        print(result.sample)
