"""Named starting points for ``tfs train --preset NAME``.

A preset is a set of :class:`~tfs_decoder.training.config.TrainConfig` values; flags given on the
command line override them. ``cpu`` is what ``tfs train`` uses with no arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.errors import TfsError

DEFAULT_PRESET = "cpu"

PRESETS: dict[str, dict[str, Any]] = {
    # The no-argument main job: TrainConfig's defaults (the 8-layer model on the default
    # corpus, char tokens, as many steps as fit in a 10-minute time budget).
    "cpu": {},
    # GPT-2 small's widths with 8 layers and a 1024-token context, byte-level BPE; sized
    # for one GPU (32 x 1024 tokens per micro-batch, 4 micro-batches per step).
    "gpt2-8l": {
        "d_model": 768,
        "n_layers": 8,
        "n_heads": 12,
        "d_mlp": 3072,
        "n_ctx": 1024,
        "batch_size": 32,
        "grad_accum": 4,
        "lr": 6e-4,
        "warmup_steps": 200,
        "max_steps": 5000,
        "weight_decay": 0.1,
        "dropout": 0.0,
        "init_std": 0.02,  # GPT-2's, for its width
        "max_epochs": 0.0,  # no limit: big text
        "eval_interval": 250,
        "eval_steps": 50,
        "checkpoint_minutes": 10.0,
        "tokenizer": "bpe",
        "bpe_vocab_size": 8192,
        "compile": True,
    },
    # A few seconds end to end: checks that everything runs, learns nothing useful.
    "smoke": {
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 2,
        "d_mlp": 64,
        "n_ctx": 32,
        "batch_size": 8,
        "grad_accum": 1,
        "lr": 3e-3,
        "warmup_steps": 2,
        "max_steps": 20,
        "weight_decay": 0.1,
        "dropout": 0.0,
        "eval_interval": 10,
        "eval_steps": 2,
        "tokenizer": "char",
        "compile": False,
    },
}


def preset_config(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of preset ``name``; :class:`TfsError` naming the known
    presets if there is none by that name."""
    if name not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise TfsError(f"--preset: unknown preset {name!r}; known presets: {known}")
    return dataclasses.replace(TrainConfig(), **PRESETS[name])
