"""The command line's flags: argument types, and ``tfs train``'s flags, one per field of
:class:`~tfs_decoder.training.config.TrainConfig`, turned into the run's settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tfs_attention.attention import BACKENDS
from tfs_decoder.training.checkpoint import CONFIG_FILE
from tfs_decoder.training.config import DTYPES, TOKENIZERS, TrainConfig
from tfs_decoder.training.errors import CheckpointError, TfsError, one_line
from tfs_decoder.training.load import resolve_checkpoint_dir
from tfs_decoder.training.presets import DEFAULT_PRESET, preset_config

# ---------------------------------------------------------------------------------------
# Argument types


def int_at_least(minimum: int) -> Callable[[str], int]:
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


def float_in(low: float, high: float, *, low_open: bool, high_open: bool) -> Callable[[str], float]:
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


def prompt_text(text: str) -> str:
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
TRAIN_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("data", dict(metavar="PATH", help="a text file or a folder of .txt files (default: the "
     "built-in corpus, the Python Language Reference topics of pydoc_data)")),
    ("out", dict(metavar="DIR", help="run directory for checkpoints, metrics.jsonl, loss.png "
     f"and sample.txt (default: {TrainConfig.out})")),
    ("tokenizer", dict(choices=TOKENIZERS, help="char: one token per character; bpe: "
     'byte-level BPE fitted to the text (needs pip install "tfs-decoder[bpe]"); word: the '
     r"pieces of re.split(r'\b', text), words and the runs between them, the most frequent "
     "up to --word-vocab-size, <unk> for the rest")),
    ("bpe_vocab_size", dict(type=int, metavar="N", help="vocabulary size of --tokenizer bpe")),
    ("word_vocab_size", dict(type=int, metavar="N", help="vocabulary size of --tokenizer "
     "word, <unk> included")),
    ("d_model", dict(type=int, metavar="N", help="width of the residual stream")),
    ("n_layers", dict(type=int, metavar="N", help="residual blocks")),
    ("n_heads", dict(type=int, metavar="N", help="attention heads (d_head = d_model/n_heads)")),
    ("d_mlp", dict(type=int, metavar="N", help="hidden width of the MLP")),
    ("n_ctx", dict(type=int, metavar="N", help="context length in tokens")),
    ("dropout", dict(type=float, metavar="P", help="dropout probability")),
    ("init_std", dict(type=float, metavar="STD", help="std of the weights' normal "
     "initialisation")),
    ("batch_size", dict(type=int, metavar="N", help="windows per micro-batch (per process)")),
    ("grad_accum", dict(type=int, metavar="N", help="micro-batches per optimiser step")),
    ("lr", dict(type=float, metavar="LR", help="peak learning rate")),
    ("min_lr", dict(type=float, metavar="LR", help="learning rate at the end of the cosine "
     "(default --lr / 10)")),
    ("warmup_steps", dict(type=int, metavar="N", help="steps of linear warmup (auto: "
     "min(100, max_steps / 10))")),
    ("max_steps", dict(type=int, metavar="N", help="optimiser steps in all (auto: as many "
     "as fit in --time-budget)")),
    ("time_budget", dict(type=float, metavar="MIN", help="minutes the whole run may take; "
     "without --max-steps the step count is fitted to it, with --max-steps the run ends "
     "early if they do not fit; 0: none (default 10 without --max-steps, else none)")),
    ("max_epochs", dict(type=float, metavar="E", help="most passes over the training text "
     "a step count chosen by --time-budget may make (0: no limit)")),
    ("weight_decay", dict(type=float, metavar="W", help="AdamW weight decay (matrices only)")),
    ("grad_clip", dict(type=float, metavar="NORM", help="clip the gradient norm (0: off)")),
    ("eval_interval", dict(type=int, metavar="N", help="steps between validation runs "
     "(auto: min(100, max_steps / 10))")),
    ("eval_steps", dict(type=int, metavar="N", help="validation batches per evaluation "
     "(auto: min(20, max(2, max_steps / 5)))")),
    ("val_fraction", dict(type=float, metavar="F", help="share of the text, from its end, "
     "held out for validation")),
    ("log_interval", dict(type=int, metavar="N", help="steps between metrics.jsonl lines")),
    ("checkpoint_minutes", dict(type=float, metavar="MIN", help="minutes between checkpoints "
     "(0: none by time; one is always written at the end)")),
    ("checkpoint_interval", dict(type=int, metavar="N", help="steps between checkpoints "
     "(0: none by step count)")),
    ("sample_tokens", dict(type=int, metavar="N", help="tokens of the sample generated at the "
     "end (0: none)")),
    ("sample_prompt", dict(type=prompt_text, metavar="TEXT", help="prompt of that sample "
     r"(\n is a newline)")),
    ("seed", dict(type=int, metavar="S", help="seeds initialisation, batches, dropout, sample")),
    ("device", dict(metavar="{auto,cpu,cuda,cuda:N,mps}", help="where to train; auto: CUDA, "
     "else MPS, else CPU")),
    ("dtype", dict(choices=list(DTYPES), help="auto: bf16 autocast on CUDA where supported, "
     "else fp32; fp32/float32: full precision; bf16/bfloat16: bfloat16 autocast")),
    ("attention_backend", dict(choices=list(BACKENDS), help="manual: attention from scratch; "
     "sdpa: torch's fused scaled_dot_product_attention (often faster on GPUs)")),
    ("model", dict(metavar="FILE.py:CLASS", help="train your own whole decoder, built as "
     "CLASS(config=DecoderConfig(...)) from these flags (see tfs exercise decoder); not with "
     "--attention, --mlp or --layernorm")),
    ("attention", dict(metavar="FILE.py:CLASS", help="your attention in every block of tfs's "
     "decoder, built as CLASS(d_model=, n_heads=)")),
    ("mlp", dict(metavar="FILE.py:CLASS", help="your MLP in every block of tfs's decoder, "
     "built as CLASS(d_model=, d_mlp=)")),
    ("layernorm", dict(metavar="FILE.py:CLASS", help="your LayerNorm for every LayerNorm of "
     "tfs's decoder, built as CLASS(d_model=); checkpoints record each FILE's absolute path "
     "and tfs sample/eval/attention-plot import it again")),
    ("compile", dict(action=argparse.BooleanOptionalAction, help="torch.compile the model "
     "(--no-compile turns off a preset's compile)")),
    ("resume", dict(action="store_true", help="continue the latest checkpoint in --out; "
     "settings not given as flags come from that checkpoint (from --preset if given)")),
]  # fmt: skip


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def default_note(field: str, presets: dict[str, TrainConfig]) -> str:
    """`` (default X)``, or each preset's value where the presets differ (``auto`` where
    it is derived from the other settings)."""
    values = {name: getattr(config, field) for name, config in presets.items()}
    if field in ("data", "out", "resume", "sample_prompt") or set(values.values()) == {None}:
        return ""
    values = {name: "auto" if value is None else value for name, value in values.items()}
    if len(set(values.values())) == 1:
        return f" (default {values[DEFAULT_PRESET]})"
    return " (" + ", ".join(f"{name}: {value}" for name, value in values.items()) + ")"


# ---------------------------------------------------------------------------------------
# tfs train


def train_config_from_args(options: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of a ``tfs train`` command line: ``options`` holds only the
    flags the user gave (field name -> value, plus ``"preset"`` if given).

    Without ``--resume`` the settings start from the preset; with ``--resume`` and no
    ``--preset`` they start from those saved in the checkpoint being resumed, so
    ``tfs train --resume --out DIR`` continues a run whatever flags started it. Flags
    given override either, and the settings derived from them (:data:`DERIVED_SETTINGS`)
    are derived anew unless given too; flags that change the model's shape are then
    refused by :func:`~tfs_decoder.training.trainer.train` with the list of differences.
    """
    options = dict(options)
    preset = options.pop("preset", None)
    for flag, derived in DERIVED_SETTINGS.items():
        if flag in options:  # re-derive what the preset or the resumed run set from it
            options.update({name: None for name in derived if name not in options})
    base = preset_config(DEFAULT_PRESET if preset is None else preset)
    out = options.get("out", base.out)  # the run directory, wherever a checkpoint says it was
    if options.get("resume") and preset is None:
        saved = _saved_train_settings(Path(out))
        if saved is not None:
            base = saved
    return _replace(base, {**options, "out": out})


# Settings derived from a flag (None: derive it): when the user gives the flag and not the
# setting, a preset's or a resumed run's value of the setting gives way and is derived
# from the user's flag, so that a default never refuses a flag the user gave.
DERIVED_SETTINGS = {
    "max_steps": ("time_budget", "warmup_steps", "eval_interval", "eval_steps"),
    "lr": ("min_lr",),
}


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
        return train_config_from_saved(saved, directory / CONFIG_FILE)
    except (TfsError, OSError, ValueError, KeyError, TypeError):
        return None


def train_config_from_saved(saved: Any, source: Path) -> TrainConfig:
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
            f"checkpoint: {source}: invalid training settings: {one_line(str(error))}"
        ) from error
