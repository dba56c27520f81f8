"""The learner's own modules in a training run.

``tfs train --model FILE.py:Class`` trains a whole decoder of the learner's;
``--attention``, ``--mlp`` and ``--layernorm FILE.py:Class`` put the learner's component
into tfs's :class:`~tfs_decoder.Decoder` instead: the attention and the MLP of every block
(through the Decoder's ``make_attn``/``make_mlp``), every LayerNorm (each block's ``ln1``,
``ln2`` and ``ln_final``, replaced after construction). Each class is imported with
:func:`~tfs_decoder.checks.exercise.load_target` and built with the keywords ``tfs check``
builds it with::

    Class(config=DecoderConfig(...))       # --model
    Class(d_model=..., n_heads=...)        # --attention (d_head = d_model / n_heads)
    Class(d_model=..., d_mlp=...)          # --mlp
    Class(d_model=...)                     # --layernorm

The learner's modules keep their own initialisation; tfs's Decoder still scales a ``W_O``
or ``W_out`` of theirs by ``1 / sqrt(2 * n_layers)``. A run saves each ``FILE.py`` as an
absolute path among its training settings, so ``tfs sample``, ``tfs eval`` and
``--resume`` import the same class again from wherever they run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tfs_attention.checks import attention as attention_checks
from tfs_core.checking import source_file, trimmed
from tfs_decoder.block import ResidualBlock
from tfs_decoder.checks import decoder as decoder_checks
from tfs_decoder.checks import layernorm as layernorm_checks
from tfs_decoder.checks.exercise import load_target
from tfs_decoder.config import DecoderConfig
from tfs_decoder.decoder import Decoder
from tfs_decoder.training.device import autocast
from tfs_decoder.training.errors import UsageError
from tfs_mlp.checks import mlp as mlp_checks

# A small batch of a few positions: enough to show a wrong shape or a forward that raises.
_VERIFY_BATCH, _VERIFY_POS = 2, 4


@dataclass(frozen=True)
class Part:
    """A module a learner may write: tfs's constructor (shown when theirs does not fit)
    and the keywords ``tfs check`` builds it with, from the model's config."""

    signature: str
    keywords: Callable[[DecoderConfig], dict[str, Any]]


PARTS = {
    "model": Part(decoder_checks.CONTRACT.signature, lambda c: {"config": c}),
    "attention": Part(
        attention_checks.CONTRACT.signature, lambda c: {"d_model": c.d_model, "n_heads": c.n_heads}
    ),
    "mlp": Part(mlp_checks.CONTRACT.signature, lambda c: {"d_model": c.d_model, "d_mlp": c.d_mlp}),
    "layernorm": Part(layernorm_checks.CONTRACT.signature, lambda c: {"d_model": c.d_model}),
}
"""The ``tfs train`` flags (and :class:`~tfs_decoder.training.config.TrainConfig` fields)
that name a learner's class."""


def learner_targets(settings: Mapping[str, Any]) -> dict[str, str]:
    """The learner's ``FILE.py:Class`` targets among training ``settings`` (a TrainConfig's
    fields, or the ``"train"`` object a checkpoint saved), by flag; ``{}`` for tfs's model."""
    return {name: settings[name] for name in PARTS if isinstance(settings.get(name), str)}


def absolute_targets(settings: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`learner_targets` with each ``FILE.py`` made absolute, as a run saves them."""
    targets: dict[str, Any] = learner_targets(settings)
    for name, target in targets.items():
        where, _, cls = target.rpartition(":")
        if where.endswith(".py"):
            targets[name] = f"{Path(where).resolve()}:{cls}"
    return targets


def build_model(
    config: DecoderConfig, targets: Mapping[str, str], *, source: str = ""
) -> nn.Module:
    """The model a run trains: tfs's :class:`~tfs_decoder.Decoder` with the learner's parts
    of ``targets`` in it, or the learner's whole decoder (``targets["model"]``).

    Args:
        config: the model's sizes.
        targets: flag name (``"model"``, ``"attention"``, ``"mlp"``, ``"layernorm"``) ->
            ``FILE.py:Class``, as :func:`learner_targets` gives them.
        source: what gave the targets, to start each message with (a checkpoint).

    Raises:
        UsageError: one line naming the flag: the file or class is missing, the file raises
            on import, or the class's constructor does not fit tfs's.
    """
    classes = {
        name: load_target(target, want_class=True, argument=_label(name, source))
        for name, target in targets.items()
    }

    def make(name: str) -> Callable[[DecoderConfig], nn.Module] | None:
        if name not in classes:
            return None
        return lambda c: _construct(name, classes[name], c, source)

    if "model" in classes:
        return _construct("model", classes["model"], config, source)
    decoder = Decoder(config, make_attn=make("attention"), make_mlp=make("mlp"))
    make_ln = make("layernorm")
    if make_ln is not None:
        for block in decoder.blocks:
            block.ln1 = make_ln(config)
            block.ln2 = make_ln(config)
        decoder.ln_final = make_ln(config)  # type: ignore[assignment]
    return decoder


def verify_forward(
    model: nn.Module,
    config: DecoderConfig,
    targets: Mapping[str, str],
    *,
    device: torch.device,
    dtype: torch.dtype | None,
    source: str = "",
) -> None:
    """Run each learner's part of ``model`` alone on a small batch (the first block's, for
    a part every block has), then the whole model forward and backward, as training will.

    Raises:
        UsageError: one line naming the flag: a forward or backward raised (its traceback
            cut to the learner's own lines) or returned something other than a tensor of
            the expected shape.
    """
    if not targets:
        return
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(_VERIFY_BATCH, _VERIFY_POS, config.d_model, generator=generator).to(device)
    pos = min(_VERIFY_POS, config.n_ctx)
    tokens = torch.randint(0, config.d_vocab, (_VERIFY_BATCH, pos), generator=generator)
    if isinstance(model, Decoder) and "model" not in targets:
        first = model.blocks[0]
        assert isinstance(first, ResidualBlock)
        parts = {"attention": first.attn, "mlp": first.mlp, "layernorm": first.ln1}
        for name in targets:
            with torch.no_grad():
                _forward(_label(name, source), parts[name], x, config.d_model, device, dtype)
    label = ", ".join(_label(name, source) for name in targets)
    logits = _forward(label, model, tokens.to(device), config.d_vocab, device, dtype)
    try:
        logits.float().mean().backward()  # type: ignore[no-untyped-call]
    except Exception as error:  # the learner's code: any failure is theirs to fix
        raise UsageError(f"{label}: the backward pass raised {_trimmed(error, model)}") from error
    model.zero_grad(set_to_none=True)


def describe(targets: Mapping[str, str]) -> str:
    """``your attention (FILE.py:Class), ...`` for the run's first line; ``""`` without."""
    what = {"model": "decoder", "attention": "attention", "mlp": "MLP", "layernorm": "LayerNorm"}
    return ", ".join(f"your {what[name]} ({target})" for name, target in targets.items())


def _label(name: str, source: str) -> str:
    return f"{source}: --{name}" if source else f"--{name}"


def _construct(name: str, cls: type, config: DecoderConfig, source: str) -> nn.Module:
    part = PARTS[name]
    keywords = part.keywords(config)
    shown = ", ".join(
        f"{key}={type(value).__name__}(...)" if dataclasses.is_dataclass(value) else
        f"{key}={value!r}"
        for key, value in keywords.items()
    )  # fmt: skip
    call = f"{cls.__name__}({shown})"
    try:
        module = cls(**keywords)
    except Exception as error:  # the learner's code: any failure is theirs to fix
        raise UsageError(
            f"{_label(name, source)}: {call} raised {trimmed(error, source_file(cls))}; "
            f"expected the constructor of tfs's {part.signature}"
        ) from error
    if not isinstance(module, nn.Module):
        raise UsageError(
            f"{_label(name, source)}: expected {call} to be an nn.Module, got "
            f"{type(module).__name__}"
        )
    return module


def _forward(
    label: str,
    module: nn.Module,
    inputs: Tensor,
    width: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Tensor:
    """``module(inputs)``, which must be a tensor ``[*inputs.shape[:2], width]``."""
    what = f"{type(module).__name__}.forward on {list(inputs.shape)}"
    try:
        with autocast(device, dtype):
            out = module(inputs)
    except Exception as error:  # the learner's code: any failure is theirs to fix
        raise UsageError(f"{label}: {what} raised {_trimmed(error, module)}") from error
    expected = [*inputs.shape[:2], width]
    if not isinstance(out, Tensor) or list(out.shape) != expected:
        got = f"shape {list(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise UsageError(f"{label}: {what} returned {got}; expected shape {expected}")
    return out


def _trimmed(error: BaseException, module: nn.Module) -> str:
    """The error with its traceback cut to the lines of the file ``module``'s class is in."""
    return trimmed(error, source_file(type(module)))
