"""The ``tfs`` command: ``tfs train``, ``tfs sample``, ``tfs eval``, ``tfs attention-plot``,
``tfs exercise`` and ``tfs check``.

``tfs train`` with no arguments trains the ``cpu`` preset (an 8-layer character-level
model) on the built-in corpus; ``--preset NAME`` starts from another preset and every other
flag overrides one setting of it (a field of
:class:`~tfs_decoder.training.config.TrainConfig`, ``--d-model`` is ``d_model``);
``--model``, ``--attention``, ``--mlp`` and ``--layernorm FILE.py:Class`` train the
learner's own classes (:mod:`tfs_decoder.training.learner`). ``tfs sample`` continues a
prompt with a saved model, ``tfs eval`` measures its validation loss,
``tfs attention-plot`` draws one layer's attention patterns for a prompt as a PNG (one heatmap
per head). ``tfs exercise`` writes a starting file for one component, ``tfs check`` runs
tfs's checks of that component on a learner's class (:mod:`tfs_decoder.checks.exercise`).

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
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch

from tfs_decoder.checks import exercise
from tfs_decoder.training import commands, trainer
from tfs_decoder.training.config import DTYPES
from tfs_decoder.training.errors import TfsError, UsageError, one_line
from tfs_decoder.training.flags import (
    TRAIN_FLAGS,
    default_note,
    flag_name,
    float_in,
    int_at_least,
    prompt_text,
)
from tfs_decoder.training.presets import DEFAULT_PRESET, PRESETS, preset_config

__all__ = ["build_parser", "main"]

PROG = "tfs"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so :func:`main` prints them as one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


CHECKPOINT_HELP = "a run directory (its latest checkpoint) or a ckpt-* directory"
ATTENTION_PNG = "attention.png"


def build_parser() -> argparse.ArgumentParser:
    """The ``tfs`` argument parser (its errors raise :class:`UsageError`)."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Train, sample from, evaluate and look inside a GPT-2-style decoder-only transformer."
        ),
        epilog="Run 'tfs COMMAND --help' for a command's flags.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_train(subparsers)
    _add_sample(subparsers)
    _add_eval(subparsers)
    _add_attention_plot(subparsers)
    _add_exercise(subparsers)
    _add_check(subparsers)
    return parser


def _add_train(subparsers: Any) -> None:
    """``tfs train``: a flag per TrainConfig field, and ``--preset``."""
    train = subparsers.add_parser(
        "train",
        help="train a model (no flags: the cpu preset on the built-in corpus)",
        description=(
            f"Train a decoder. Settings start from --preset (default {DEFAULT_PRESET}); each "
            "flag given overrides one of them. Writes checkpoints, metrics.jsonl, loss.png "
            "and sample.txt into --out. --model, --attention, --mlp and --layernorm "
            "FILE.py:CLASS train your own classes (see tfs exercise), each run once on a small "
            "batch before the first step. Under torchrun (torchrun --nproc_per_node=N -m "
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
    for field, spec in TRAIN_FLAGS:
        kwargs = {**spec, "help": spec["help"] + default_note(field, presets)}
        train.add_argument(flag_name(field), dest=field, default=argparse.SUPPRESS, **kwargs)
    train.set_defaults(handler=commands.run_train)


def _add_sample(subparsers: Any) -> None:
    """``tfs sample``."""
    sample = subparsers.add_parser(
        "sample",
        help="continue a prompt with a trained model",
        description="Print the prompt followed by tokens the model samples after it.",
    )
    sample.add_argument("--checkpoint", metavar="DIR", required=True, help=CHECKPOINT_HELP)
    sample.add_argument(
        "--prompt",
        type=prompt_text,
        metavar="TEXT",
        help=r"text to continue (\n is a newline; default: the run's sample prompt)",
    )
    sample.add_argument(
        "--max-new-tokens",
        type=int_at_least(0),
        default=500,
        metavar="N",
        help="tokens to generate (default 500)",
    )
    sample.add_argument(
        "--temperature",
        type=float_in(0, math.inf, low_open=False, high_open=True),
        default=0.8,
        metavar="T",
        help="softmax temperature; 0 is greedy (default 0.8)",
    )
    sample.add_argument(
        "--top-k",
        type=int_at_least(1),
        metavar="K",
        help="sample among the K most likely tokens only (default: all)",
    )
    sample.add_argument(
        "--top-p",
        type=float_in(0, 1, low_open=True, high_open=False),
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
    sample.set_defaults(handler=commands.run_sample)


def _add_eval(subparsers: Any) -> None:
    """``tfs eval``."""
    evaluate = subparsers.add_parser(
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
        type=int_at_least(1),
        metavar="N",
        help="batches of evaluation windows (default: the run's --eval-steps)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int_at_least(1),
        metavar="N",
        help="windows per batch (default: the run's --batch-size)",
    )
    _add_device_flags(evaluate)
    evaluate.set_defaults(handler=commands.run_eval)


def _add_attention_plot(subparsers: Any) -> None:
    """``tfs attention-plot``."""
    attention = subparsers.add_parser(
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
        type=prompt_text,
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
    attention.set_defaults(handler=commands.run_attention_plot)


def _add_exercise(subparsers: Any) -> None:
    """``tfs exercise``."""
    parser = subparsers.add_parser(
        "exercise",
        help="write a starting file for one component, to write and then `tfs check`",
        description=(
            "Write COMPONENT's class with tfs's constructor and parameters, its formula and "
            "shapes, and a forward that raises NotImplementedError. --list shows the "
            "components in curriculum order."
        ),
    )
    parser.add_argument("component", nargs="?", metavar="COMPONENT", help="see --list")
    parser.add_argument("--list", action="store_true", help="list the components and stop")
    parser.add_argument("--out", metavar="FILE", help="where to write (default my_COMPONENT.py)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=exercise.run_exercise)


def _add_check(subparsers: Any) -> None:
    """``tfs check``."""
    parser = subparsers.add_parser(
        "check",
        help="run tfs's checks of one component on your own class",
        description=(
            "Build TARGET as tfs builds COMPONENT, run every check tfs's own component "
            "passes, and print one line per check. Exit status 0: every check passed; 1: "
            "one failed or is not implemented yet; 2: a usage error."
        ),
    )
    parser.add_argument("component", metavar="COMPONENT", help=", ".join(exercise.BY_NAME))
    parser.add_argument(
        "target", metavar="TARGET", help="path/to/file.py:ClassName or package.module:ClassName"
    )
    parser.add_argument(
        "--no-learning", action="store_true", help="skip the learning checks (a few seconds)"
    )
    parser.set_defaults(handler=exercise.run_check)


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
# Entry point


def _fail(message: str) -> int:
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
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
                "expected a command: train, sample, eval, attention-plot, exercise or check "
                "(see tfs --help)"
            )
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except TfsError as error:
        return _fail(str(error))
    except torch.OutOfMemoryError as error:
        detail = one_line(str(error))[:120]
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
