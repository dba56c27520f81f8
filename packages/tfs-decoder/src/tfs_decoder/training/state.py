"""The model and optimizer of a run: fresh from the seed, or restored from a checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tfs_decoder.config import DecoderConfig
from tfs_decoder.training.checkpoint import Checkpoint, set_rng_state
from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.errors import CheckpointError
from tfs_decoder.training.learner import build_model, learner_targets
from tfs_decoder.training.load import verify_config_matches, verify_state_matches
from tfs_decoder.training.optim import build_optimizer


@dataclass
class RunState:
    """The trainable state of a run.

    Attributes:
        model: the plain model on the run's device (never wrapped): tfs's
            :class:`~tfs_decoder.Decoder`, with the learner's parts the settings name, or
            the learner's whole decoder (:mod:`~tfs_decoder.training.learner`).
        model_config: its config.
        optimizer: AdamW over its parameters.
        start_step: optimizer steps already taken (0, or the resumed checkpoint's step).
        previous_elapsed: seconds the runs before a resume took.
        resumed_from: the checkpoint directory resumed from, if any.
    """

    model: nn.Module
    model_config: DecoderConfig
    optimizer: torch.optim.AdamW
    start_step: int = 0
    previous_elapsed: float = 0.0
    resumed_from: Path | None = None


def build_state(
    config: TrainConfig, d_vocab: int, device: torch.device, checkpoint: Checkpoint | None
) -> RunState:
    """Initialise the model from ``config.seed`` (then load the checkpoint's weights,
    optimizer state and RNG states over it, if given) and move it to ``device``.

    Raises:
        CheckpointError: the checkpoint does not fit the model the flags ask for.
    """
    model_config = config.model_config(d_vocab)
    torch.manual_seed(config.seed)
    model = build_model(model_config, learner_targets(dataclasses.asdict(config)))
    start_step, previous_elapsed = 0, 0.0
    optimizer_state: dict[str, Any] | None = None
    if checkpoint is not None:
        verify_config_matches(checkpoint.model_config, model_config)
        verify_state_matches(model, checkpoint.model_state, checkpoint.path)
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
                f"checkpoint: {checkpoint.path if checkpoint else config.out}: optimizer "
                f"state does not fit the model: {error}"
            ) from error
    resumed_from = checkpoint.path if checkpoint is not None else None
    return RunState(model, model_config, optimizer, start_step, previous_elapsed, resumed_from)
