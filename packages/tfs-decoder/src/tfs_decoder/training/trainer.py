"""The training loop behind ``tfs train``: data, model, AdamW, evaluation, checkpoints, sample.

One call of :func:`train` does the whole job:

1. picks the device and precision (``auto``: CUDA with bf16 autocast where supported, else
   MPS, else CPU in float32) and joins the process group when ``torchrun`` started several
   processes (``WORLD_SIZE > 1``: DDP, ``gloo`` on CPU, ``nccl`` on CUDA);
2. loads the text, fits the tokenizer (or takes the checkpoint's on ``resume``), tokenises
   once and keeps the end of the id stream for validation;
3. builds the :class:`~tfs_decoder.Decoder` and AdamW (weight decay on matrices only), with
   the learning rate of each step from :func:`~tfs_decoder.training.optim.lr_at` (warmup, cosine);
4. trains with gradient accumulation and clipping; every ``eval_interval`` steps measures the
   mean cross-entropy on fixed validation windows; writes ``metrics.jsonl``, checkpoints,
   ``loss.png`` and ``sample.txt`` into ``out`` (rank 0 only).

Resuming is exact: batch ``s`` is a pure function of ``(seed, s, rank)``
(:class:`~tfs_decoder.training.batches.WindowSampler`) and the dropout RNG is re-seeded from
``(seed, s, rank)`` at every step, so a run stopped after step ``s`` and resumed computes the
same steps ``s + 1, ...`` as one that never stopped, bit for bit on the same machine.

Faults:

- a non-finite training loss (or non-finite weights) stops the run with a one-line
  :class:`~tfs_decoder.training.errors.TfsError` (``training diverged: ...``). The loss is
  checked at every logging step and, together with the weights, before every checkpoint is
  written, so no checkpoint holds a diverged model: the newest one on disk is the last good one.
- Ctrl-C (``SIGINT``) during the training steps ends the run at the end of the step in
  progress: rank 0 writes a checkpoint of that step (the same atomic save as the periodic
  ones; model and optimizer after the last completed optimizer step, so ``resume``
  continues exactly from it) and :class:`TrainingInterrupted` is raised. A second Ctrl-C
  interrupts at once (the save is atomic, so the previous checkpoint stays intact). Under
  DDP every rank stops at the end of its step and only rank 0 saves; ``torchrun`` itself
  may terminate the workers first, in which case the last periodic checkpoint stands.
  Outside the steps (setup, the final evaluation and sample) Ctrl-C raises a plain
  ``KeyboardInterrupt`` and saves nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tfs_decoder.decoder import Decoder
from tfs_decoder.loss import cross_entropy
from tfs_decoder.training.batches import WindowSampler, eval_windows, split_ids
from tfs_decoder.training.checkpoint import (
    Checkpoint,
    check_config_matches,
    check_state_matches,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.corpus import load_text
from tfs_decoder.training.device import autocast, resolve_device, resolve_dtype
from tfs_decoder.training.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_object,
    distributed,
    env_dist_info,
)
from tfs_decoder.training.errors import CheckpointError, TfsError
from tfs_decoder.training.files import write_text_atomic
from tfs_decoder.training.optim import build_optimizer, lr_at
from tfs_decoder.training.plot import plot_losses, read_metrics
from tfs_decoder.training.progress import ProgressBar, format_duration
from tfs_decoder.training.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    tokenizer_from_dict,
)

__all__ = ["TrainConfig", "TrainResult", "TrainingInterrupted", "evaluate", "train"]

METRICS_FILE = "metrics.jsonl"
PNG_FILE = "loss.png"
SAMPLE_FILE = "sample.txt"
# Sampling settings of the end-of-training sample.
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40


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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``SIGINT``) stopped :func:`train` after a completed step.

    A ``KeyboardInterrupt``, so code that does not know it still sees an interrupt.

    Attributes:
        step: the optimizer steps completed (the step of the saved checkpoint).
        checkpoint: the checkpoint directory holding that step (``None`` on ranks other
            than 0).
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step, checkpoint)
        self.step = step
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------------------------
# Pieces of the loop


class _InterruptFlag:
    """Set by the first ``SIGINT`` while :func:`_deferred_interrupt` is active."""

    def __init__(self) -> None:
        self.set = False


@contextmanager
def _deferred_interrupt() -> Iterator[_InterruptFlag]:
    """Turn the first ``SIGINT`` into a flag the loop reads at the end of each step.

    The first Ctrl-C only sets the flag and puts the previous handler back, so a second one
    raises ``KeyboardInterrupt`` at once. Only the default handler is replaced, and only in
    the main thread (elsewhere signals cannot be handled; the flag then never gets set).
    """
    flag = _InterruptFlag()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.set = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise TfsError(
            f"training diverged: the loss is {loss} at step {step}; "
            "try a lower --lr (or more --warmup-steps)"
        )


def _check_finite_weights(model: nn.Module, step: int) -> None:
    """Non-finite weights end the run before they can reach a checkpoint. Under DDP the
    weights are the same on every rank, so every rank reaches the same verdict."""
    with torch.no_grad():
        finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if not finite:
        raise TfsError(
            f"training diverged: the weights are not finite after step {step}; "
            "try a lower --lr (or more --warmup-steps)"
        )


def _check_before_save(
    model: nn.Module, window_loss: Tensor, window_steps: int, step: int, info: DistInfo | None
) -> None:
    """Check what the logging steps have not yet checked, the loss of the steps since the
    last log (summed over the ranks of ``info``; this rank's alone when ``None``), and the
    weights, so that a diverged model never reaches a checkpoint."""
    if window_steps:
        loss = window_loss.clone()
        ranks = 1
        if info is not None:
            all_reduce_sum(loss, info)
            ranks = info.world_size
        _check_finite(loss.item() / window_steps / ranks, step)
    _check_finite_weights(model, step)


def _dropout_seed(seed: int, step: int, rank: int) -> int:
    """The global RNG's seed for step ``step`` on ``rank``: a pure function, so a resumed
    run draws the same dropout masks as an uninterrupted one, and ranks draw different ones."""
    digest = hashlib.blake2b(f"tfs-dropout:{seed}:{step}:{rank}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _fit_tokenizer(config: TrainConfig, text: str) -> Tokenizer:
    if config.tokenizer == "bpe":
        return BPETokenizer.fit(text, vocab_size=config.bpe_vocab_size)
    return CharTokenizer.fit(text)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    windows: list[tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    info: DistInfo | None = None,
) -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` over ``windows``.

    Under DDP each rank evaluates every ``world_size``-th batch and the sums are added up,
    so every rank returns the mean over all of ``windows``. The model is in eval mode (no
    dropout) for the duration and is put back in the mode it was in.
    """
    info = info if info is not None else DistInfo()
    was_training = model.training
    model.eval()
    try:
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for x, y in windows[info.rank :: info.world_size]:
            with autocast(device, dtype):
                logits = model(x.to(device))
            losses = cross_entropy(logits, y.to(device))
            totals[0] += losses.sum(dtype=torch.float64)
            totals[1] += losses.numel()
        all_reduce_sum(totals, info)
        return float(totals[0] / totals[1])
    finally:
        model.train(was_training)


def _read_records(path: Path) -> list[dict[str, Any]]:
    return read_metrics(path) if path.exists() else []


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of ``metrics.jsonl`` up to ``step`` (a resume rewinds to there)."""
    kept = [r for r in _read_records(path) if int(r.get("step", 0)) <= step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def _prompt_ids(tokenizer: Tokenizer, prompt: str) -> tuple[list[int], str]:
    """The ids of ``prompt``, or of a stand-in when the tokenizer cannot encode it."""
    if prompt:
        try:
            ids = tokenizer.encode(prompt)
        except TfsError:
            ids = []
        if ids:
            return ids, prompt
    return [0], tokenizer.decode([0])


def _count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _format_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n:,}"


# ---------------------------------------------------------------------------------------
# The run


def train(config: TrainConfig, *, progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train a :class:`~tfs_decoder.Decoder` as ``config`` says; see the module docstring.

    Args:
        config: the settings.
        progress: show the progress line and evaluation results on stderr, then the
            summary and the sample on stdout (rank 0 only). ``False``: silent.
        stop_at: end this run after step ``stop_at`` (checkpoint, evaluation, plot and
            sample as at the end) as if interrupted there; the learning-rate schedule
            still runs to ``max_steps``, so a later ``resume`` continues it exactly.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TfsError: a problem the user can fix (data, checkpoint, settings), or a diverged
            run (``training diverged: ...``, the newest checkpoint is the last good one);
            the message is one line naming the flag or file.
        TrainingInterrupted: Ctrl-C during the training steps; the step completed last is
            saved as a checkpoint (rank 0) first. See the module docstring.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    config.validate()
    if stop_at is not None and not 0 <= stop_at <= config.max_steps:
        raise ValueError(
            f"stop_at: expected an int in [0, max_steps={config.max_steps}], got {stop_at}"
        )
    info = env_dist_info()
    device = resolve_device(config.device, info)
    with distributed(info, device):
        return _train(config, info, device, progress=progress, stop_at=stop_at)


def _train(
    config: TrainConfig,
    info: DistInfo,
    device: torch.device,
    *,
    progress: bool,
    stop_at: int | None,
) -> TrainResult:
    started = time.perf_counter()
    out = Path(config.out)
    main = info.is_main
    dtype = resolve_dtype(config.dtype, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.set_float32_matmul_precision("high")  # float32 matmuls on tensor cores (TF32)
    bar = ProgressBar(config.max_steps, enabled=progress and main, log_interval=config.log_interval)

    # --- data and tokenizer ----------------------------------------------------------
    checkpoint: Checkpoint | None = None
    if config.resume:
        checkpoint = load_checkpoint(out, map_location="cpu")
        saved_kind = checkpoint.tokenizer.get("kind")
        if saved_kind != config.tokenizer:
            raise CheckpointError(
                f"checkpoint: {checkpoint.path} was trained with --tokenizer {saved_kind}, "
                f"the flags ask for --tokenizer {config.tokenizer}"
            )
    text = load_text(config.data)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if checkpoint is not None:
        tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
        saved_sha = checkpoint.state.get("data_sha256")
        if saved_sha is not None and saved_sha != text_sha256:
            raise CheckpointError(
                f"checkpoint: {checkpoint.path} was trained on different text (sha256 "
                f"{str(saved_sha)[:12]}..., --data gives {text_sha256[:12]}...); "
                "resume with the same --data"
            )
    elif info.enabled:
        # Fit once on rank 0 and share it: every rank must agree on the vocabulary.
        fitted = _fit_tokenizer(config, text) if main else None
        tokenizer = tokenizer_from_dict(
            broadcast_object(fitted.to_dict() if fitted is not None else None, info)
        )
    else:
        tokenizer = _fit_tokenizer(config, text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = split_ids(ids, config.val_fraction, config.n_ctx)
    sampler = WindowSampler(
        train_ids,
        config.n_ctx,
        config.batch_size,
        config.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val_windows = [
        (x.to(device), y.to(device))
        for x, y in eval_windows(val_ids, config.n_ctx, config.batch_size, config.eval_steps)
    ]
    val_chars = len(tokenizer.decode(val_ids.tolist()))
    tokens_per_char = val_ids.numel() / max(val_chars, 1)

    # --- model and optimiser ---------------------------------------------------------
    model_config = config.model_config(tokenizer.vocab_size)
    torch.manual_seed(config.seed)
    model = Decoder(model_config)
    optimizer_state: dict[str, Any] | None = None
    start_step = 0
    previous_elapsed = 0.0
    if checkpoint is not None:
        check_config_matches(checkpoint.model_config, model_config)
        check_state_matches(model, checkpoint.model_state, checkpoint.path)
        model.load_state_dict(checkpoint.model_state)
        optimizer_state = checkpoint.state.get("optimizer")
        if optimizer_state is None:
            raise CheckpointError(f"checkpoint: {checkpoint.path} has no optimizer state")
        start_step = checkpoint.step
        previous_elapsed = float(checkpoint.state.get("elapsed_s", 0.0))
        rng = checkpoint.state.get("rng")
        if rng is not None:
            set_rng_state(rng)
    model.to(device)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(
                f"checkpoint: {checkpoint.path if checkpoint else out}: optimizer state does "
                f"not fit the model: {error}"
            ) from error
    resumed_from = checkpoint.path if checkpoint is not None else None
    del checkpoint  # the weights now live in the model; free the copies

    ddp: DistributedDataParallel | None = None
    train_model: nn.Module = model
    if info.enabled:
        ddp = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        train_model = ddp
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]

    # --- output files ----------------------------------------------------------------
    metrics_path = out / METRICS_FILE
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if start_step > 0:
            _truncate_metrics(metrics_path, start_step)
        else:
            metrics_path.write_text("", encoding="utf-8")
    stop = config.max_steps if stop_at is None else max(stop_at, start_step)
    tokens_per_step = config.batch_size * config.n_ctx * config.grad_accum * info.world_size
    bar.write(
        f"tfs train: {_format_count(_count_parameters(model))} parameters "
        f"({config.n_layers} layers, d_model {config.d_model}, {config.n_heads} heads, "
        f"n_ctx {config.n_ctx}), vocab {tokenizer.vocab_size} ({config.tokenizer}), "
        f"{train_ids.numel():,} train / {val_ids.numel():,} val tokens, "
        f"{device} {'float32' if dtype is None else str(dtype).removeprefix('torch.')}"
        + (f", {info.world_size} processes" if info.enabled else "")
        + (f", resuming at step {start_step}" if start_step else "")
    )

    def elapsed() -> float:
        return previous_elapsed + time.perf_counter() - started

    def save(step: int) -> Path:
        state = {
            "optimizer": optimizer.state_dict(),
            "elapsed_s": elapsed(),
            "world_size": info.world_size,
            "data_sha256": text_sha256,
            "rng": rng_state(),
        }
        return save_checkpoint(
            out,
            step=step,
            model=model,
            model_config=model_config,
            train_config=dataclasses.asdict(config),
            tokenizer=tokenizer.to_dict(),
            state=state,
        )

    def plot() -> Path:
        title = (
            f"{config.n_layers} layers, d_model {config.d_model}, n_ctx {config.n_ctx}, "
            f"{config.tokenizer} tokens"
        )
        return plot_losses(_read_records(metrics_path), out / PNG_FILE, title=title)

    # --- the loop --------------------------------------------------------------------
    model.train()
    bar.start(start_step)
    train_time = 0.0  # seconds spent in training steps this run
    window_time = 0.0
    window_steps = 0
    window_loss = torch.zeros((), device=device)
    tokens_per_s = 0.0
    last_loss: float | None = None
    val_loss: float | None = None
    last_checkpoint = resumed_from if main else None
    step = start_step
    saved_step = start_step if resumed_from is not None else -1
    with _deferred_interrupt() as interrupt:
        for step_index in range(start_step, stop):
            t0 = time.perf_counter()
            lr = lr_at(
                step_index,
                lr=config.lr,
                min_lr=config.min_lr,
                warmup_steps=config.warmup_steps,
                max_steps=config.max_steps,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(_dropout_seed(config.seed, step_index, info.rank))
            step_loss = torch.zeros((), device=device)
            for micro in range(config.grad_accum):
                x, y = sampler.batch(step_index * config.grad_accum + micro)
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                # Gradients are averaged across ranks only after the last micro-batch.
                sync = (
                    ddp.no_sync()
                    if ddp is not None and micro < config.grad_accum - 1
                    else nullcontext()
                )
                with sync:
                    with autocast(device, dtype):
                        logits = train_model(x)
                    loss = cross_entropy(logits, y).mean()
                    (loss / config.grad_accum).backward()  # type: ignore[no-untyped-call]
                step_loss += loss.detach()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window_loss += step_loss / config.grad_accum
            window_steps += 1
            step = step_index + 1

            is_last = step == stop
            do_eval = step % config.eval_interval == 0 or is_last
            do_log = step % config.log_interval == 0 or do_eval
            if do_log:
                # .item() waits for the device, so the window's time is its true compute time.
                all_reduce_sum(window_loss, info)
                last_loss = window_loss.item() / window_steps / info.world_size
                window_time += time.perf_counter() - t0
                train_time += window_time
                tokens_per_s = tokens_per_step * window_steps / max(window_time, 1e-9)
                _check_finite(last_loss, step)
                val_loss = None
                if do_eval:
                    val_loss = evaluate(model, val_windows, device=device, dtype=dtype, info=info)
                if main:
                    record = {
                        "step": step,
                        "train_loss": last_loss,
                        "val_loss": val_loss,
                        "lr": lr,
                        "tokens_per_s": tokens_per_s,
                        "elapsed_s": elapsed(),
                        "world_size": info.world_size,
                    }
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                if val_loss is not None:
                    bar.write(
                        f"step {step}: train loss {last_loss:.4f}, val loss {val_loss:.4f} "
                        f"({val_loss * tokens_per_char / math.log(2):.3f} bits/char)"
                    )
                window_loss.zero_()
                window_steps = 0
                window_time = 0.0
            else:
                window_time += time.perf_counter() - t0
            bar.update(step, loss=last_loss, tokens_per_s=tokens_per_s or None)

            do_checkpoint = is_last or bool(
                config.checkpoint_interval and step % config.checkpoint_interval == 0
            )
            if do_checkpoint:
                # Every rank is here: the unlogged steps' loss is summed over the ranks.
                _check_before_save(model, window_loss, window_steps, step, info)
                if main:
                    last_checkpoint = save(step)
                    saved_step = step
                    if not is_last:
                        plot()
            if interrupt.set:
                bar.close()
                if main and saved_step != step:
                    # Only rank 0 is here: no collective, its own unlogged steps only.
                    _check_before_save(model, window_loss, window_steps, step, None)
                    last_checkpoint = save(step)
                raise TrainingInterrupted(step, last_checkpoint)
    bar.close()

    # --- the end: final evaluation, plot, sample -------------------------------------
    if val_loss is None:  # nothing trained in this run (resumed at or past the end)
        val_loss = evaluate(model, val_windows, device=device, dtype=dtype, info=info)
    png: Path | None = None
    sample = ""
    if main:
        png = plot()
        if config.sample_tokens > 0:
            sample = _sample(model, tokenizer, config, device, dtype)
            write_text_atomic(out / SAMPLE_FILE, sample)
    result = TrainResult(
        out=out,
        step=step,
        val_loss=val_loss,
        val_bits_per_char=val_loss * tokens_per_char / math.log(2),
        tokens_per_s=tokens_per_step * (step - start_step) / train_time if train_time else 0.0,
        elapsed_s=elapsed(),
        sample=sample,
        png=png,
        checkpoint=last_checkpoint,
        world_size=info.world_size,
    )
    if progress and main:
        print(
            f"step {result.step}: val loss {result.val_loss:.4f} nats/token, "
            f"{result.val_bits_per_char:.3f} bits/char; {result.tokens_per_s:,.0f} tokens/s; "
            f"elapsed {format_duration(result.elapsed_s)}; wrote {out}",
            file=sys.stderr,
        )
        if sample:
            print(f"--- sample ({config.sample_tokens} tokens, saved to {out / SAMPLE_FILE}) ---")
            print(sample)
    return result


def _sample(
    model: Decoder,
    tokenizer: Tokenizer,
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
) -> str:
    """``sample_tokens`` tokens after ``sample_prompt``, drawn with a generator seeded by
    ``seed`` (temperature 0.8, top-k 40): the same text for the same weights and seed."""
    prompt_ids, prompt = _prompt_ids(tokenizer, config.sample_prompt)
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    with autocast(device, dtype):
        out = model.generate(
            tokens,
            config.sample_tokens,
            temperature=SAMPLE_TEMPERATURE,
            top_k=min(SAMPLE_TOP_K, tokenizer.vocab_size),
            generator=generator,
        )
    return prompt + tokenizer.decode(out[0, len(prompt_ids) :].tolist())
