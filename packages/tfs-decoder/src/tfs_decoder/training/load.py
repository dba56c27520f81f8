"""Reading checkpoints back: the run directory's latest, every file checked, one-line errors
that name the file (the format is described in :mod:`~tfs_decoder.training.checkpoint`)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from tfs_decoder.config import DecoderConfig
from tfs_decoder.training.checkpoint import (
    CHECKPOINT_FILES,
    CONFIG_FILE,
    LATEST,
    MODEL_FILE,
    STATE_FILE,
    TOKENIZER_FILE,
    Checkpoint,
    unwrap,
)
from tfs_decoder.training.errors import CheckpointError
from tfs_decoder.training.learner import build_model, learner_targets


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory ``path`` refers to: ``path`` itself if it holds
    ``model.safetensors``, else the directory its ``latest`` file names."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint: {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint: expected a run directory or a checkpoint directory, got the file {path}"
        )
    if (path / MODEL_FILE).exists():
        return path
    latest = path / LATEST
    if not latest.exists():
        raise CheckpointError(
            f"checkpoint: no checkpoint in {path} (expected {latest} or {path / MODEL_FILE})"
        )
    try:
        name = latest.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint: cannot read {latest}: {_one_line(error)}") from error
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise CheckpointError(
            f"checkpoint: {latest} should name a checkpoint directory, got {name!r}"
        )
    target = path / name
    if not (target / MODEL_FILE).exists():
        what = "has no " + MODEL_FILE if target.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint: {latest} names {target}, which {what}")
    return target


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint: ``path`` is a run directory (its ``latest`` is followed) or a
    checkpoint directory. Tensors are placed on ``map_location``.

    Raises:
        CheckpointError: no checkpoint there, or a file is missing, truncated or corrupt
            (the one-line message names the file).
    """
    directory = resolve_checkpoint_dir(path)
    for file in CHECKPOINT_FILES:
        if not (directory / file).is_file():
            raise CheckpointError(f"checkpoint: {directory / file} is missing")

    model_state = _load_safetensors(directory / MODEL_FILE, map_location)

    config = _load_json(directory / CONFIG_FILE)
    for key in ("model", "train"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(
                f"checkpoint: {directory / CONFIG_FILE}: expected an object under {key!r}, "
                f"got {type(config.get(key)).__name__}"
            )
    model_config = _decoder_config(config["model"], directory / CONFIG_FILE)
    tokenizer = _load_json(directory / TOKENIZER_FILE)

    state_file = directory / STATE_FILE
    try:
        state = torch.load(state_file, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint: {state_file} is corrupt or unreadable: {_one_line(error)}"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint: {state_file}: expected a dict, got {type(state).__name__}"
        )
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(
            f"checkpoint: {state_file}: expected a non-negative int 'step', got {step!r}"
        )
    return Checkpoint(
        path=directory,
        step=step,
        model_config=model_config,
        train_config=config["train"],
        tokenizer=tokenizer,
        model_state=model_state,
        state=state,
    )


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], Checkpoint]:
    """Rebuild the model saved at ``path`` (see :func:`load_checkpoint`): a
    :class:`~tfs_decoder.Decoder`, with the learner's parts its training settings name
    imported again from their files, or the learner's whole decoder
    (:mod:`~tfs_decoder.training.learner`).

    Returns:
        ``(model, tokenizer dict, checkpoint)``; the model is on ``map_location`` in eval mode.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or the weights do not fit the config
            (missing, unexpected or wrong-shape tensors, all listed).
        UsageError: a learner's file or class is gone, or no longer builds.
    """
    checkpoint = load_checkpoint(path, map_location)
    model = build_model(
        checkpoint.model_config,
        learner_targets(checkpoint.train_config),
        source=f"checkpoint {checkpoint.path}",
    )
    verify_state_matches(model, checkpoint.model_state, checkpoint.path / MODEL_FILE)
    model.load_state_dict(checkpoint.model_state, strict=True)
    model.to(map_location)
    model.eval()
    return model, checkpoint.tokenizer, checkpoint


def verify_state_matches(
    model: nn.Module, model_state: Mapping[str, Tensor], source: str | os.PathLike[str]
) -> None:
    """Raise :class:`CheckpointError` listing every missing, unexpected and wrong-shape
    tensor of ``model_state`` (read from ``source``) compared with ``model``."""
    expected = {k: tuple(v.shape) for k, v in unwrap(model).state_dict().items()}
    missing = sorted(k for k in expected if k not in model_state)
    unexpected = sorted(k for k in model_state if k not in expected)
    wrong = sorted(
        f"{k} (checkpoint {list(model_state[k].shape)}, model {list(expected[k])})"
        for k in expected
        if k in model_state and tuple(model_state[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected))
    if wrong:
        problems.append("wrong shape " + ", ".join(wrong))
    if problems:
        raise CheckpointError(
            f"checkpoint: {source} does not fit the model config: " + "; ".join(problems)
        )


def verify_config_matches(saved: DecoderConfig, requested: DecoderConfig) -> None:
    """Raise :class:`CheckpointError` listing each field where the checkpoint's model config
    differs from the one the flags ask for (``--resume`` with different sizes). The
    attention backend may change: both compute the same function of the same weights."""
    differences = [
        f"{field.name}: checkpoint has {getattr(saved, field.name)!r}, "
        f"flags ask for {getattr(requested, field.name)!r}"
        for field in dataclasses.fields(DecoderConfig)
        if field.name != "attention_backend"
        and getattr(saved, field.name) != getattr(requested, field.name)
    ]
    if differences:
        raise CheckpointError(
            "checkpoint: the model config does not match the flags: " + "; ".join(differences)
        )


def _load_safetensors(file: Path, map_location: str | torch.device) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load_file(file, device=str(map_location))
    except Exception as error:
        raise CheckpointError(
            f"checkpoint: {file} is truncated or corrupt: {_one_line(error)}"
        ) from error


def _load_json(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint: {file} is not valid JSON: {_one_line(error)}"
        ) from error
    if not isinstance(value, dict):
        raise CheckpointError(
            f"checkpoint: {file}: expected a JSON object, got {type(value).__name__}"
        )
    return value


def _decoder_config(values: dict[str, Any], file: Path) -> DecoderConfig:
    names = {field.name for field in dataclasses.fields(DecoderConfig)}
    missing = sorted(names - values.keys())
    unknown = sorted(values.keys() - names)
    if missing or unknown:
        raise CheckpointError(
            f"checkpoint: {file}: model config has missing fields {missing} "
            f"and unknown fields {unknown}"
        )
    try:
        return DecoderConfig(**values)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint: {file}: {_one_line(error)}") from error


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
