"""The benchmark's two runs, each in alternating rounds under an optional time budget.

* :class:`Settings`, what a run measures (resolved from the command line), and
  :class:`Clock`, the time spent against the budget;
* :func:`run_training`: warms every training row up (compiling the compiled ones while
  the budget allows), then times the rows in rotated order, one :class:`Row` each;
* :func:`run_generation`: greedy generation with and without the key/value cache, one
  :class:`GenRow` each.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from candidates import CANDIDATES, Shape, generate_fn, generation_models
from measure import Peak, Runner, autocast, first_line, sync

PROMPT = 16
"""Prompt length for the generation timings (batch 1, greedy)."""


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype | None
    shape_name: str
    shape: Shape
    train: list[str]
    compiled: list[str]
    generate: list[str]
    repeats: int
    steps: int
    warmup: int
    gen_new: int
    gen_batch: int
    gen_repeats: int
    peak_size: int
    budget_s: float | None
    gen_reserve_s: float
    out: Path


class Clock:
    """Elapsed time against an optional budget."""

    def __init__(self, budget_s: float | None) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()


@dataclass
class Row:
    """One training-step measurement: a candidate, eager or compiled."""

    candidate: str
    compiled: bool
    note: str
    params: int = 0
    state_bytes: int = 0  # parameters + AdamW state
    warmup_s: float = 0.0  # includes compilation for compiled rows
    step_s: list[float] = field(default_factory=list)
    saved_bytes_per_token: float | None = None
    peak_bytes: int | None = None  # CUDA only
    loss: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.candidate} (compiled)" if self.compiled else self.candidate

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.step_s) if self.step_s else None


@dataclass
class GenRow:
    candidate: str
    use_cache: bool
    seconds: list[float] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.candidate}, {'cache' if self.use_cache else 'no cache'}"

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def run_training(s: Settings, clock: Clock, peak: Peak, log: Callable[[str], None]) -> list[Row]:
    """Warm every row up, then time them in rotated order; ``peak`` is sampled each round."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, s.shape.d_vocab, (s.shape.batch, s.shape.n_ctx), generator=generator)
    tokens = tokens.to(s.device)
    plan = [(name, False) for name in s.train] + [(name, True) for name in s.compiled]
    rows: list[Row] = []
    runners: dict[int, Runner] = {}
    longest_compile = 60.0  # a guess until the first compiled row has been measured
    # Time kept for the timed rounds (30 s) and for generation.
    reserve = 30.0 + (s.gen_reserve_s if s.generate else 0.0)
    for name, compiled in plan:
        candidate = CANDIDATES[name]
        row = Row(name, compiled, candidate.note)
        rows.append(row)
        wanted = reserve + 1.5 * longest_compile
        if compiled and clock.left() < wanted:
            row.error = (
                f"skipped: {clock.left():.0f} s of the time budget left, {wanted:.0f} s wanted"
            )
            log(f"  {row.label}: {row.error}")
            continue
        try:
            runner = Runner(candidate, s.shape, s.device, s.dtype, compiled, tokens)
            row.params = sum(p.numel() for p in runner.model.parameters())
            start = time.perf_counter()
            for _ in range(s.warmup):
                loss = runner.step()
            sync(s.device)
            row.warmup_s = time.perf_counter() - start
            row.loss = float(loss)
            row.state_bytes = runner.state_bytes()
            if compiled:
                longest_compile = max(longest_compile, row.warmup_s)
            else:
                row.saved_bytes_per_token = runner.saved_bytes() / s.shape.tokens
            runners[len(rows) - 1] = runner
            log(
                f"  {row.label}: {row.params / 1e6:.2f} M parameters, warm-up "
                f"{row.warmup_s:.1f} s, loss {row.loss:.3f}"
            )
        except Exception as error:  # one broken candidate must not end the run
            row.error = first_line(error)
            log(f"  {row.label}: failed: {row.error}")
            _free_memory(s.device)
    order = list(runners)
    peak.sample()  # warm-up
    peak.samples.clear()
    for round_ in range(s.repeats):
        if round_ > 0 and clock.left() < reserve - 30.0:
            log(f"  time budget spent: stopping after {round_} rounds")
            break
        peak.sample()
        shift = round_ % max(len(order), 1)
        for index in order[shift:] + order[:shift]:
            row = rows[index]
            if row.error:
                continue
            runner = runners[index]
            try:
                if s.device.type == "cuda":
                    sync(s.device)
                    torch.cuda.reset_peak_memory_stats(s.device)
                    resident = torch.cuda.memory_allocated(s.device)
                row.step_s += runner.timed(s.steps)
                if s.device.type == "cuda":
                    # What this candidate alone would need: its parameters and optimizer
                    # state plus what its steps allocated above everything resident.
                    step_peak = torch.cuda.max_memory_allocated(s.device) - resident
                    row.peak_bytes = max(row.peak_bytes or 0, step_peak + row.state_bytes)
            except Exception as error:
                row.error = first_line(error)
                log(f"  {row.label}: failed: {row.error}")
                del runner, runners[index]
                _free_memory(s.device)
        log(f"  round {round_ + 1}/{s.repeats} done, {clock.elapsed():.0f} s")
    del runners
    _free_memory(s.device)
    return rows


def _free_memory(device: torch.device) -> None:
    """Hand freed memory back (after a failed row, an out-of-memory one included)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def generation_shape(s: Settings) -> Shape:
    """The training shape with room for the prompt and every new token."""
    return replace(s.shape, n_ctx=max(s.shape.n_ctx, 512, PROMPT + s.gen_new))


def run_generation(s: Settings, clock: Clock, log: Callable[[str], None]) -> list[GenRow]:
    gen_shape = generation_shape(s)
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, s.shape.d_vocab, (s.gen_batch, PROMPT), generator=generator)
    prompt = prompt.to(s.device)
    rows: list[GenRow] = []
    fns: dict[int, Callable[[Tensor, int], Tensor]] = {}
    for name, built in generation_models(s.generate, gen_shape).items():
        candidate = CANDIDATES[name]
        modes = (True, False) if candidate.kv_cache else (False,)
        try:
            if isinstance(built, Exception):
                raise built
            model = built.to(s.device)
        except Exception as error:
            rows += [GenRow(name, use_cache, error=first_line(error)) for use_cache in modes]
            log(f"  generate {name}: failed: {first_line(error)}")
            continue
        for use_cache in modes:
            row = GenRow(name, use_cache)
            rows.append(row)
            try:
                fn = generate_fn(candidate, model, gen_shape.n_ctx, use_cache)
                with autocast(s.device, s.dtype):
                    fn(prompt, s.gen_new)  # warm-up: the first calls at new shapes are slow
                fns[len(rows) - 1] = fn
            except Exception as error:
                row.error = first_line(error)
                log(f"  generate {row.label}: failed: {row.error}")
    order = list(fns)
    for round_ in range(s.gen_repeats):
        if round_ > 0 and clock.left() < 0:
            log(f"  time budget spent: stopping generation after {round_} rounds")
            break
        shift = round_ % max(len(order), 1)
        for index in order[shift:] + order[:shift]:
            row = rows[index]
            if row.error:
                continue
            try:
                with autocast(s.device, s.dtype):
                    sync(s.device)
                    start = time.perf_counter()
                    out = fns[index](prompt, s.gen_new)
                    sync(s.device)
                row.seconds.append(time.perf_counter() - start)
                row.tokens = out[:, PROMPT:].tolist()
                if out.shape != (s.gen_batch, PROMPT + s.gen_new):
                    row.error = (
                        f"generated {list(out.shape)}, not {[s.gen_batch, PROMPT + s.gen_new]}"
                    )
            except Exception as error:
                row.error = first_line(error)
                log(f"  generate {row.label}: failed: {row.error}")
        log(f"  generation round {round_ + 1}/{s.gen_repeats} done, {clock.elapsed():.0f} s")
    return rows
