"""DecoderConfig: GPT-2-small defaults, one error per bad field naming it, frozen."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from tfs_decoder import DecoderConfig

SIZE_FIELDS = ("d_vocab", "d_model", "n_heads", "d_head", "d_mlp", "n_layers", "n_ctx")


def test_defaults_are_gpt2_small_widths_with_8_layers() -> None:
    config = DecoderConfig()
    assert config.d_vocab == 50257
    assert config.d_model == 768
    assert config.n_heads == 12
    assert config.d_head == 64
    assert config.n_heads * config.d_head == config.d_model
    assert config.d_mlp == 3072 == 4 * config.d_model
    assert config.n_ctx == 1024
    assert config.n_layers == 8
    assert config.activation == "gelu"
    assert config.positional == "learned"
    assert config.ln_eps == 1e-5
    assert config.dropout == 0.0
    assert config.init_std == 0.02


def test_accepts_every_allowed_option() -> None:
    for activation in ("gelu", "relu"):
        for positional in ("learned", "sinusoidal"):
            config = DecoderConfig(activation=activation, positional=positional, dropout=0.5)
            assert (config.activation, config.positional) == (activation, positional)
    # n_heads * d_head need not equal d_model.
    assert DecoderConfig(d_model=10, n_heads=3, d_head=7).d_head == 7


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("value", [0, -1, True])
def test_sizes_must_be_positive_ints(field: str, value: int) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=rf"^{field}: expected a positive int, got {value!r}$"):
        DecoderConfig(**kwargs)


@pytest.mark.parametrize("field", SIZE_FIELDS)
@pytest.mark.parametrize("value", [2.0, "8", None])
def test_sizes_of_the_wrong_type_are_rejected_naming_the_field(field: str, value: Any) -> None:
    # Under the test suite's runtime checker the annotation `int` rejects these first
    # (TypeCheckError, a TypeError); without it __post_init__ raises ValueError. Both name
    # the field.
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises((TypeError, ValueError), match=field):
        DecoderConfig(**kwargs)


@pytest.mark.parametrize("value", ["swish", "GELU", "", "gelu_new"])
def test_unknown_activation_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match=rf"^activation: expected one of .*got '{value}'"):
        DecoderConfig(activation=value)


@pytest.mark.parametrize("value", ["rotary", "Learned", "", "none"])
def test_unknown_positional_is_rejected(value: str) -> None:
    with pytest.raises(ValueError, match=rf"^positional: expected one of .*got '{value}'"):
        DecoderConfig(positional=value)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, math.nan])
def test_dropout_outside_unit_interval_is_rejected(value: float) -> None:
    with pytest.raises(
        ValueError, match=rf"^dropout: expected a probability in \[0, 1\), got {value}"
    ):
        DecoderConfig(dropout=value)


@pytest.mark.parametrize("value", [0.0, -1e-5, math.nan])
def test_ln_eps_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match=rf"^ln_eps: expected a positive float, got {value}"):
        DecoderConfig(ln_eps=value)


@pytest.mark.parametrize("value", [0.0, -0.02, math.nan])
def test_init_std_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match=rf"^init_std: expected a positive float, got {value}"):
        DecoderConfig(init_std=value)


def test_config_is_frozen() -> None:
    config = DecoderConfig(n_layers=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_layers = 3  # type: ignore[misc]
    assert config.n_layers == 2
    # The supported way to change a field re-validates.
    assert dataclasses.replace(config, n_layers=3).n_layers == 3
    with pytest.raises(ValueError, match=r"^n_layers: "):
        dataclasses.replace(config, n_layers=0)
