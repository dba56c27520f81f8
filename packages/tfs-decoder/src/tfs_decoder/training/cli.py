"""The ``tfs`` command: ``tfs train``, ``tfs sample``, ``tfs eval``, ``tfs attention-plot``.

``tfs train`` with no arguments trains the ``cpu`` preset (an 8-layer character-level model)
on the built-in corpus; ``--preset NAME`` starts from another preset and every other flag
overrides one setting of it (a field of :class:`~tfs_decoder.training.config.TrainConfig`,
``--d-model`` is ``d_model``). ``tfs sample`` continues a prompt with a saved model,
``tfs eval`` measures its validation loss, ``tfs attention-plot`` draws one layer's
attention patterns for a prompt as a PNG (one heatmap per head).

A mistake the user can fix (a flag, a data file, a checkpoint: every
:class:`~tfs_decoder.training.errors.TfsError`) ends the command with one line
``tfs: error: <message>`` on stderr and exit status 2, never a traceback; Ctrl-C ends it
with exit status 130 (during ``tfs train``'s steps after saving a checkpoint of the last
completed step, named on one line ``tfs: interrupted at step N; saved ... (resume with
--resume)``; a second Ctrl-C while it saves stops at once and keeps the previous
checkpoint). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from tfs_attention.attention import BACKENDS
from tfs_decoder.decoder import Decoder
from tfs_decoder.training import trainer
from tfs_decoder.training.attention_plot import attention_patterns, plot_attention
from tfs_decoder.training.batches import eval_windows, split_ids
from tfs_decoder.training.checkpoint import (
    CONFIG_FILE,
    Checkpoint,
    load_model,
    resolve_checkpoint_dir,
)
from tfs_decoder.training.config import DTYPES, TOKENIZERS, TrainConfig
from tfs_decoder.training.corpus import load_text
from tfs_decoder.training.device import autocast, resolve_device, resolve_dtype
from tfs_decoder.training.errors import CheckpointError, DataError, TfsError
from tfs_decoder.training.presets import DEFAULT_PRESET, PRESETS, preset_config
from tfs_decoder.training.tokenizer import Tokenizer, tokenizer_from_dict
from tfs_decoder.training.trainer import evaluate

__all__ = ["build_parser", "main"]

PROG = "tfs"


class UsageError(TfsError):
    """A command line argparse could not parse (unknown flag, bad value, missing argument)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so :func:`main` prints them as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ---------------------------------------------------------------------------------------
# Argument types


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _float_in(
    low: float, high: float, *, low_open: bool, high_open: bool
) -> Callable[[str], float]:
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    span = f"in {left}{low:g}, {high:g}{right}" if high < math.inf else f">= {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = (
            math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _prompt_text(text: str) -> str:
    """Lets a prompt given on a shell line carry newlines and tabs: ``\\n``, ``\\t``, ``\\\\``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------
# The parser

# (TrainConfig field, argparse keyword arguments). Range checks live in
# TrainConfig.validate, which names the flag; argparse only converts the type.
_TRAIN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("data", dict(metavar="PATH", help="a text file or a folder of .txt files (default: the "
     "built-in corpus, the Python Language Reference topics of pydoc_data)")),
    ("out", dict(metavar="DIR", help="run directory for checkpoints, metrics.jsonl, loss.png "
     f"and sample.txt (default: {TrainConfig.out})")),
    ("tokenizer", dict(choices=TOKENIZERS, help="char: one token per character; bpe: "
     'byte-level BPE fitted to the text (needs pip install "tfs-decoder[bpe]")')),
    ("bpe_vocab_size", dict(type=int, metavar="N", help="vocabulary size of --tokenizer bpe")),
    ("d_model", dict(type=int, metavar="N", help="width of the residual stream")),
    ("n_layers", dict(type=int, metavar="N", help="residual blocks")),
    ("n_heads", dict(type=int, metavar="N", help="attention heads (d_head = d_model/n_heads)")),
    ("d_mlp", dict(type=int, metavar="N", help="hidden width of the MLP")),
    ("n_ctx", dict(type=int, metavar="N", help="context length in tokens")),
    ("dropout", dict(type=float, metavar="P", help="dropout probability")),
    ("batch_size", dict(type=int, metavar="N", help="windows per micro-batch (per process)")),
    ("grad_accum", dict(type=int, metavar="N", help="micro-batches per optimiser step")),
    ("lr", dict(type=float, metavar="LR", help="peak learning rate")),
    ("min_lr", dict(type=float, metavar="LR", help="learning rate at the end of the cosine")),
    ("warmup_steps", dict(type=int, metavar="N", help="steps of linear warmup")),
    ("max_steps", dict(type=int, metavar="N", help="optimiser steps in all")),
    ("weight_decay", dict(type=float, metavar="W", help="AdamW weight decay (matrices only)")),
    ("grad_clip", dict(type=float, metavar="NORM", help="clip the gradient norm (0: off)")),
    ("eval_interval", dict(type=int, metavar="N", help="steps between validation runs")),
    ("eval_steps", dict(type=int, metavar="N", help="validation batches per evaluation")),
    ("val_fraction", dict(type=float, metavar="F", help="share of the text, from its end, "
     "held out for validation")),
    ("log_interval", dict(type=int, metavar="N", help="steps between metrics.jsonl lines")),
    ("checkpoint_interval", dict(type=int, metavar="N", help="steps between checkpoints "
     "(0: only at the end)")),
    ("sample_tokens", dict(type=int, metavar="N", help="tokens of the sample generated at the "
     "end (0: none)")),
    ("sample_prompt", dict(type=_prompt_text, metavar="TEXT", help="prompt of that sample "
     r"(\n is a newline)")),
    ("seed", dict(type=int, metavar="S", help="seeds initialisation, batches, dropout, sample")),
    ("device", dict(metavar="{auto,cpu,cuda,cuda:N,mps}", help="where to train; auto: CUDA, "
     "else MPS, else CPU")),
    ("dtype", dict(choices=list(DTYPES), help="auto: bf16 autocast on CUDA where supported, "
     "else fp32; fp32/float32: full precision; bf16/bfloat16: bfloat16 autocast")),
    ("attention_backend", dict(choices=list(BACKENDS), help="manual: attention from scratch; "
     "sdpa: torch's fused scaled_dot_product_attention (often faster on GPUs)")),
    ("compile", dict(action=argparse.BooleanOptionalAction, help="torch.compile the model "
     "(--no-compile turns off a preset's compile)")),
    ("resume", dict(action="store_true", help="continue the latest checkpoint in --out; "
     "settings not given as flags come from that checkpoint (from --preset if given)")),
]  # fmt: skip
CHECKPOINT_HELP = "a run directory (its latest checkpoint) or a ckpt-* directory"
ATTENTION_PNG = "attention.png"


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _default_note(field: str, presets: dict[str, TrainConfig]) -> str:
    """`` (default X)``, or each preset's value where the presets differ."""
    values = {name: getattr(config, field) for name, config in presets.items()}
    if field in ("data", "out", "resume", "sample_prompt") or None in values.values():
        return ""
    if len(set(values.values())) == 1:
        return f" (default {values[DEFAULT_PRESET]})"
    return " (" + ", ".join(f"{name}: {value}" for name, value in values.items()) + ")"


def build_parser() -> argparse.ArgumentParser:
    """The ``tfs`` argument parser (its errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Train, sample from, evaluate and look inside a GPT-2-style decoder-only transformer."
        ),
        epilog="Run 'tfs COMMAND --help' for a command's flags.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model (no flags: the cpu preset on the built-in corpus)",
        description=(
            f"Train a decoder. Settings start from --preset (default {DEFAULT_PRESET}); each "
            "flag given overrides one of them. Writes checkpoints, metrics.jsonl, loss.png "
            "and sample.txt into --out. Under torchrun (torchrun --nproc_per_node=N -m "
            "tfs_decoder train ...) it trains with DDP."
        ),
    )
    train.add_argument(
        "--preset",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"starting settings: {', '.join(PRESETS)} (default {DEFAULT_PRESET})",
    )
    presets = {name: preset_config(name) for name in PRESETS}
    for field, spec in _TRAIN_FLAGS:
        kwargs = {**spec, "help": spec["help"] + _default_note(field, presets)}
        train.add_argument(_flag(field), dest=field, default=argparse.SUPPRESS, **kwargs)
    train.set_defaults(handler=_run_train)

    sample = commands.add_parser(
        "sample",
        help="continue a prompt with a trained model",
        description="Print the prompt followed by tokens the model samples after it.",
    )
    sample.add_argument("--checkpoint", metavar="DIR", required=True, help=CHECKPOINT_HELP)
    sample.add_argument(
        "--prompt",
        type=_prompt_text,
        metavar="TEXT",
        help=r"text to continue (\n is a newline; default: the run's sample prompt)",
    )
    sample.add_argument(
        "--max-new-tokens",
        type=_int_at_least(0),
        default=500,
        metavar="N",
        help="tokens to generate (default 500)",
    )
    sample.add_argument(
        "--temperature",
        type=_float_in(0, math.inf, low_open=False, high_open=True),
        default=0.8,
        metavar="T",
        help="softmax temperature; 0 is greedy (default 0.8)",
    )
    sample.add_argument(
        "--top-k",
        type=_int_at_least(1),
        metavar="K",
        help="sample among the K most likely tokens only (default: all)",
    )
    sample.add_argument(
        "--top-p",
        type=_float_in(0, 1, low_open=True, high_open=False),
        metavar="P",
        help="sample from the smallest set of tokens with probability >= P (default: all)",
    )
    sample.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the sampling generator (default: a fresh random seed)",
    )
    _add_device_flags(sample)
    sample.set_defaults(handler=_run_sample)

    evaluate = commands.add_parser(
        "eval",
        help="print a trained model's validation loss",
        description=(
            "Print the mean next-token loss in nats/token and bits/char. Without --data: on "
            "the validation split of the run's own training text; with --data: on all of "
            "that text."
        ),
    )
    evaluate.add_argument("--checkpoint", metavar="DIR", required=True, help=CHECKPOINT_HELP)
    evaluate.add_argument(
        "--data",
        metavar="PATH",
        help="evaluate on all of this text file or folder of .txt files instead",
    )
    evaluate.add_argument(
        "--eval-steps",
        type=_int_at_least(1),
        metavar="N",
        help="batches of evaluation windows (default: the run's --eval-steps)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        metavar="N",
        help="windows per batch (default: the run's --batch-size)",
    )
    _add_device_flags(evaluate)
    evaluate.set_defaults(handler=_run_eval)

    attention = commands.add_parser(
        "attention-plot",
        help="draw one layer's attention patterns for a prompt as a PNG",
        description=(
            "Run the prompt through a trained model and draw the attention pattern of every "
            "head of one layer as a heatmap: the destination (query) token down the y axis, "
            "the source (key) token along the x axis, weights on one 0..1 colour scale."
        ),
    )
    attention.add_argument("--checkpoint", metavar="DIR", required=True, help=CHECKPOINT_HELP)
    attention.add_argument(
        "--prompt",
        type=_prompt_text,
        metavar="TEXT",
        required=True,
        help=r"the text whose tokens are attended over, at most n_ctx tokens (\n is a newline)",
    )
    attention.add_argument(
        "--layer",
        type=int,
        default=0,
        metavar="N",
        help="which block's attention to draw: 0 is the first, -1 the last (default 0)",
    )
    attention.add_argument(
        "--out",
        metavar="FILE.png",
        default=ATTENTION_PNG,
        help=f"the PNG to write, replaced if it exists (default {ATTENTION_PNG} in the "
        "current directory)",
    )
    _add_device_flags(attention)
    attention.set_defaults(handler=_run_attention_plot)
    return parser


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        metavar="{auto,cpu,cuda,cuda:N,mps}",
        help="where to run (default auto: CUDA, else MPS, else CPU)",
    )
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="auto",
        help="auto (default): bf16 autocast on CUDA where supported, else fp32",
    )


# ---------------------------------------------------------------------------------------
# tfs train


def train_config_from_args(options: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of a ``tfs train`` command line: ``options`` holds only the
    flags the user gave (field name -> value, plus ``"preset"`` if given).

    Without ``--resume`` the settings start from the preset; with ``--resume`` and no
    ``--preset`` they start from those saved in the checkpoint being resumed, so
    ``tfs train --resume --out DIR`` continues a run whatever flags started it. Flags
    given override either; flags that change the model's shape are then refused by
    :func:`~tfs_decoder.training.trainer.train` with the list of differences.
    """
    options = dict(options)
    preset = options.pop("preset", None)
    base = preset_config(DEFAULT_PRESET if preset is None else preset)
    out = options.get("out", base.out)  # the run directory, wherever a checkpoint says it was
    if options.get("resume") and preset is None:
        saved = _saved_train_settings(Path(out))
        if saved is not None:
            base = saved
    return _replace(base, {**options, "out": out})


def _replace(base: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:  # a flag whose field is gone: a bug, not a user error
        raise AssertionError(f"tfs train: flags without a TrainConfig field: {unknown}")
    return dataclasses.replace(base, **changes)


def _saved_train_settings(out: Path) -> TrainConfig | None:
    """The settings saved in the latest checkpoint of ``out``, or ``None`` when there is no
    readable one (train() then reports the problem with the checkpoint)."""
    try:
        directory = resolve_checkpoint_dir(out)
        saved = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))["train"]
        return _train_config_from_saved(saved, directory / CONFIG_FILE)
    except (TfsError, OSError, ValueError, KeyError, TypeError):
        return None


def _train_config_from_saved(saved: Any, source: Path) -> TrainConfig:
    """A :class:`TrainConfig` from the ``"train"`` settings a checkpoint saved (fields this
    version does not know are dropped; ones it added keep their defaults)."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint: {source}: expected an object under 'train'")
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in saved.items() if k in names}
    try:
        return dataclasses.replace(TrainConfig(), **known)
    except (TfsError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint: {source}: invalid training settings: {_one_line(str(error))}"
        ) from error


def _run_train(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    config = train_config_from_args(options)
    trainer.train(config, progress=True)
    return 0


# ---------------------------------------------------------------------------------------
# tfs sample and tfs eval


def _load(
    checkpoint: str, device_name: str, dtype_name: str
) -> tuple[Decoder, Tokenizer, Checkpoint, torch.device, torch.dtype | None]:
    """The saved model on the device, its tokenizer, the checkpoint, device and dtype."""
    device = resolve_device(device_name)
    dtype = resolve_dtype(dtype_name, device)
    model, tokenizer_dict, saved = load_model(checkpoint, map_location=device)
    return model, tokenizer_from_dict(tokenizer_dict), saved, device, dtype


def _encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids of ``--prompt``; a prompt that is empty or that the tokenizer cannot encode
    is a user error naming the flag."""
    if not prompt:
        raise UsageError("--prompt: expected at least one character, got ''")
    try:
        prompt_ids = tokenizer.encode(prompt)
    except TfsError as error:
        raise TfsError(f"--prompt: {error}") from error
    if not prompt_ids:
        raise TfsError(f"--prompt: {prompt!r} encodes to no tokens")
    return prompt_ids


def _run_sample(args: argparse.Namespace) -> int:
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    prompt = args.prompt
    if prompt is None:
        default = saved.train_config.get("sample_prompt")
        prompt = default if isinstance(default, str) and default else "\n"
    prompt_ids = _encode_prompt(tokenizer, prompt)
    generator = torch.Generator(device=device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    with autocast(device, dtype):
        out = model.generate(
            tokens,
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=generator,
        )
    ids = out[0].tolist()
    text: str = tokenizer.decode(ids)
    if not text.startswith(prompt):  # a prompt the tokenizer cannot round-trip exactly
        text = prompt + tokenizer.decode(ids[len(prompt_ids) :])
    print(text)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    settings = _train_config_from_saved(saved.train_config, saved.path / CONFIG_FILE)
    n_ctx = saved.model_config.n_ctx
    if args.data is not None:
        text = load_text(args.data)
        what = f"all of {args.data}"
    else:
        text = load_text(settings.data)
        what = f"validation split of {settings.data or 'the built-in corpus'}"
    try:
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    except TfsError as error:
        raise TfsError(f"--data: {error}") from error
    if args.data is None:
        _, ids = split_ids(ids, settings.val_fraction, n_ctx)
    elif ids.numel() < n_ctx + 1:
        raise DataError(
            f"--data: {args.data!r} has {ids.numel()} tokens; the model needs at least "
            f"n_ctx + 1 = {n_ctx + 1} for one evaluation window"
        )
    batch_size = args.batch_size if args.batch_size is not None else settings.batch_size
    n_batches = args.eval_steps if args.eval_steps is not None else settings.eval_steps
    windows = eval_windows(ids, n_ctx, batch_size, n_batches)
    loss = evaluate(model, windows, device=device, dtype=dtype)
    chars = len(tokenizer.decode(ids.tolist()))
    bits_per_char = loss * ids.numel() / max(chars, 1) / math.log(2)
    print(
        f"val loss {loss:.4f} nats/token, {bits_per_char:.4f} bits/char "
        f"({what}: {ids.numel():,} tokens, {batch_size * n_batches} windows of {n_ctx}; "
        f"checkpoint {saved.path}, step {saved.step})"
    )
    return 0


# ---------------------------------------------------------------------------------------
# tfs attention-plot


def _run_attention_plot(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out: expected a PNG file to write, got the directory {args.out!r}")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: expected a file name ending in .png, got {args.out!r}")
    if not args.prompt:  # before loading the model: a mistake found in a moment
        raise UsageError("--prompt: expected at least one character, got ''")
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    n_layers, n_ctx = saved.model_config.n_layers, saved.model_config.n_ctx
    if not -n_layers <= args.layer < n_layers:
        raise UsageError(
            f"--layer: expected a layer in [{-n_layers}, {n_layers - 1}] (the model has "
            f"{n_layers} layers; negative counts back from the last), got {args.layer}"
        )
    layer = args.layer % n_layers
    prompt_ids = _encode_prompt(tokenizer, args.prompt)
    if len(prompt_ids) > n_ctx:
        raise UsageError(
            f"--prompt: expected at most n_ctx={n_ctx} tokens (the model's context), got "
            f"{len(prompt_ids)} tokens"
        )
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    with autocast(device, dtype):
        patterns = attention_patterns(model, tokens, layer)[0]
    labels = [tokenizer.decode([i]) for i in prompt_ids]
    title = f"{saved.path} (step {saved.step}): layer {layer} attention, {len(labels)} tokens"
    try:
        plot_attention(patterns, labels, out, title=title)
    except OSError as error:
        raise TfsError(f"--out: cannot write {args.out!r}: {error.strerror or error}") from error
    heads = patterns.shape[0]
    print(f"wrote {out} (layer {layer}, {heads} heads, {len(labels)} tokens)")
    return 0


# ---------------------------------------------------------------------------------------
# Entry point


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())


def _fail(message: str) -> int:
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tfs`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # --help: argparse printed it and exits
            return stop.code if isinstance(stop.code, int) else 0
        if args.command is None:
            return _fail(
                "expected a command: train, sample, eval or attention-plot (see tfs --help)"
            )
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except TfsError as error:
        return _fail(str(error))
    except torch.OutOfMemoryError as error:
        detail = _one_line(str(error))[:120]
        return _fail(
            f"out of memory on the device ({detail}); "
            "try a smaller --batch-size (with a larger --grad-accum) or --n-ctx"
        )
    except BrokenPipeError:  # `tfs sample | head`: the reader left; that is not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as error:  # the disk or the file system refused (--out unwritable, ...)
        where = f"{error.filename}: " if error.filename else ""
        return _fail(f"{where}{error.strerror or error}")
    except KeyboardInterrupt as interrupt:
        saved = isinstance(interrupt, trainer.TrainingInterrupted)
        if sys.stderr.isatty() and not saved:  # train() ends its progress line itself
            print(file=sys.stderr)  # end a progress line drawn with \r
        where = ""
        if isinstance(interrupt, trainer.TrainingInterrupted):
            where = f" at step {interrupt.step}"
            if interrupt.checkpoint is not None:
                where += f"; saved {interrupt.checkpoint} (resume with --resume)"
        print(f"{PROG}: interrupted{where}", file=sys.stderr)
        return 130
