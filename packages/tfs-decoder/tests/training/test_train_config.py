"""TrainConfig: every setting checked at construction, with the flag named in the error."""

from __future__ import annotations

from typing import Any

import pytest

from tfs_decoder import DecoderConfig
from tfs_decoder.training.config import ConfigError, TrainConfig
from tfs_decoder.training.errors import TfsError


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"d_model": 30, "n_heads": 4}, r"--n-heads: expected a divisor of --d-model=30"),
        ({"n_layers": 0}, r"--n-layers: expected a positive int, got 0"),
        ({"batch_size": True}, r"--batch-size: expected a positive int, got True"),
        ({"warmup_steps": -1}, r"--warmup-steps: expected an int >= 0, got -1"),
        ({"warmup_steps": 20, "max_steps": 10}, r"--warmup-steps: expected at most --max-steps"),
        ({"lr": 0.0}, r"--lr: expected a number in \(0, inf\), got 0\.0"),
        ({"min_lr": 1.0}, r"--min-lr: expected a number <= --lr=0\.005, got 1\.0"),
        ({"dropout": 1.0}, r"--dropout: expected a number in \[0, 1\), got 1\.0"),
        ({"val_fraction": 0.0}, r"--val-fraction: expected a number in \(0, 1\), got 0\.0"),
        ({"grad_clip": float("nan")}, r"--grad-clip: expected a number in \[0, inf\), got nan"),
        ({"tokenizer": "words"}, r"--tokenizer: expected one of \('char', 'bpe', 'word'\), got"),
        ({"word_vocab_size": 1}, r"--word-vocab-size: expected an int >= 2, got 1"),
        ({"device": "tpu"}, r"--device: expected one of .*, got 'tpu'"),
        ({"dtype": "fp8"}, r"--dtype: expected one of .*, got 'fp8'"),
    ],
)
def test_config_rejects_bad_settings(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        TrainConfig(**changes)
    assert isinstance(info.value, TfsError)
    assert isinstance(info.value, ValueError)


def test_config_describes_the_model() -> None:
    config = TrainConfig(d_model=64, n_heads=4, d_mlp=96, n_layers=3, n_ctx=32, dropout=0.1)
    assert config.model_config(d_vocab=50) == DecoderConfig(
        d_vocab=50, d_model=64, n_heads=4, d_head=16, d_mlp=96, n_layers=3, n_ctx=32,
        dropout=0.1, init_std=0.05,
    )  # fmt: skip
