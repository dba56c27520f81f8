"""Training checkpoints: save atomically, load with clear errors.

A run directory ``OUT`` looks like this::

    OUT/
      latest                  # text file: the name of the newest complete checkpoint
      ckpt-0000020/
        model.safetensors     # the model's state_dict (safetensors: no pickle, mmap-able)
        config.json           # {"model": DecoderConfig fields, "train": train settings}
        tokenizer.json        # the tokenizer's to_dict()
        state.pt              # {"step": int, optimizer state, RNG states, ...}
      ckpt-0000040/ ...

``state.pt`` holds only plain containers, numbers, strings and tensors, so
``torch.load(path, weights_only=True)`` reads it without running arbitrary pickle code.

Saving is crash-safe: every file is written into a hidden ``OUT/.tmp-ckpt-<step>-<pid>/``
and fsynced, the directory is renamed to ``ckpt-<step:07d>`` (one atomic rename), and only
then is ``latest`` replaced (temp file + ``os.replace``). A crash or ``SIGKILL`` at any
moment leaves ``latest`` naming a complete checkpoint; leftovers of an interrupted save are
removed by the next one. One process writes a run directory at a time (rank 0 under DDP).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from tfs_decoder.config import DecoderConfig
from tfs_decoder.training.files import atomic_path

LATEST = "latest"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_FILE = "state.pt"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, STATE_FILE)

_CKPT_NAME = re.compile(r"ckpt-(\d+)")
# Leftovers of an interrupted save: the staging directory, a stand-in copy, a replaced one.
_STALE_PREFIXES = (".tmp-ckpt-", ".old-ckpt-")


@dataclass
class Checkpoint:
    """Everything one checkpoint directory holds, loaded into memory.

    Attributes:
        path: the checkpoint directory (``OUT/ckpt-<step>``) that was read.
        step: the optimizer step the checkpoint was taken after (``state["step"]``).
        model_config: the model's :class:`~tfs_decoder.DecoderConfig`.
        train_config: the training settings saved with it (JSON types).
        tokenizer: the tokenizer as a dict (``tokenizer_from_dict`` rebuilds it).
        model_state: parameter name -> tensor, as ``Decoder.state_dict()`` names them.
        state: the contents of ``state.pt`` (optimizer state, RNG states, ``"step"``, ...).
    """

    path: Path
    step: int
    model_config: DecoderConfig
    train_config: dict[str, Any]
    tokenizer: dict[str, Any]
    model_state: dict[str, Tensor]
    state: dict[str, Any]


# ---------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    out: str | os.PathLike[str],
    *,
    step: int,
    model: nn.Module,
    model_config: DecoderConfig,
    train_config: dict[str, Any],
    tokenizer: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``OUT/ckpt-<step:07d>/`` atomically, point ``OUT/latest`` at it.

    Args:
        out: the run directory (created if missing).
        step: the number of optimizer steps taken; names the directory.
        model: the model whose ``state_dict()`` is saved (a ``torch.compile`` or DDP
            wrapper is unwrapped, so the names match a plain :class:`Decoder`).
        model_config: saved under ``"model"`` in ``config.json``.
        train_config: JSON-serialisable training settings, saved under ``"train"``.
        tokenizer: JSON-serialisable tokenizer dict, saved as ``tokenizer.json``.
        state: optimizer/scheduler state, RNG states (see :func:`rng_state`) and anything
            else made of dicts, lists, tuples, numbers, strings, ``None`` and tensors;
            saved as ``state.pt`` with ``"step"`` added.
        keep: how many checkpoints up to and including this one to keep; older
            ``ckpt-*`` directories are deleted.

    Returns:
        The new checkpoint directory.

    Raises:
        ValueError / TypeError: a bad argument (nothing is written).
        OSError: the disk refused a write; the previous checkpoint is untouched.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected a non-negative int, got {step!r}")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep: expected an int >= 1, got {keep!r}")
    if not isinstance(model_config, DecoderConfig):
        raise TypeError(
            f"model_config: expected a DecoderConfig, got {type(model_config).__name__}"
        )
    if "step" in state and state["step"] != step:
        raise ValueError(f"state: has step={state['step']!r} but step={step}")

    # Serialise everything that can fail on bad input before touching the disk.
    config_bytes = _json_bytes(
        {"model": dataclasses.asdict(model_config), "train": train_config}, "train_config"
    )
    tokenizer_bytes = _json_bytes(tokenizer, "tokenizer")
    tensors = _model_tensors(model)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:07d}"
    final = out / name
    tmp = out / f".tmp-ckpt-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        safetensors.torch.save_file(tensors, tmp / MODEL_FILE, metadata={"format": "pt"})
        _fsync_path(tmp / MODEL_FILE)
        _write_bytes(tmp / CONFIG_FILE, config_bytes)
        _write_bytes(tmp / TOKENIZER_FILE, tokenizer_bytes)
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save({**state, "step": step}, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _install(out, tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_old(out, step, keep)
    return final


def _install(out: Path, tmp: Path, final: Path) -> None:
    """Rename the complete ``tmp`` to ``final`` and point ``latest`` at it, crash-safely."""
    if not final.exists():
        os.rename(tmp, final)
        _fsync_dir(out)
        _write_latest(out, final.name)
        return
    # ``final`` is left from an interrupted run or names the step we resumed from. A
    # non-empty directory cannot be renamed over, so it must move aside first; if
    # ``latest`` names it, point ``latest`` at a hard-linked copy of the new checkpoint
    # for the moments in between, so it never names a missing directory.
    if _read_latest_name(out) == final.name:
        standin = out / f"{tmp.name}-standin"
        if standin.exists():
            shutil.rmtree(standin)
        shutil.copytree(tmp, standin, copy_function=_link_or_copy)
        _fsync_dir(standin)
        _fsync_dir(out)
        _write_latest(out, standin.name)
    aside = out / f".old-{final.name}-{os.getpid()}"
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(final, aside)
    os.rename(tmp, final)
    _fsync_dir(out)
    _write_latest(out, final.name)


def _remove_old(out: Path, step: int, keep: int) -> None:
    """Delete leftovers of interrupted saves (staging directories, ``latest`` temp files)
    and all but ``keep`` checkpoints up to ``step``.

    Checkpoints with a higher step (from an abandoned run that went further) are kept.
    """
    current = _read_latest_name(out)
    older: list[tuple[int, Path]] = []
    for child in out.iterdir():
        if child.name == current:
            continue
        if not child.is_dir():
            if child.name.startswith(f".{LATEST}.tmp-"):
                child.unlink(missing_ok=True)
            continue
        if child.name.startswith(_STALE_PREFIXES):
            shutil.rmtree(child, ignore_errors=True)
            continue
        match = _CKPT_NAME.fullmatch(child.name)
        if match is not None and int(match.group(1)) < step:
            older.append((int(match.group(1)), child))
    older.sort(reverse=True)
    for _, child in older[keep - 1 :]:
        shutil.rmtree(child, ignore_errors=True)


def _model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's state_dict as contiguous CPU tensors that share no memory (safetensors
    refuses shared tensors; a plain Decoder has none, so nothing is copied twice)."""
    model = unwrap(model)
    tensors: dict[str, Tensor] = {}
    storages: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        if tensor.numel() > 0:
            storage = tensor.untyped_storage().data_ptr()
            if storage in storages:
                tensor = tensor.clone()
            storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` (``_orig_mod``) and DDP (``module``)."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
            continue
        return model


def _json_bytes(value: Any, argument: str) -> bytes:
    try:
        text = json.dumps(value, sort_keys=True, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{argument}: expected JSON-serialisable values, {error}") from error
    return (text + "\n").encode("utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_latest(out: Path, name: str) -> None:
    with atomic_path(out / LATEST) as tmp:
        _write_bytes(tmp, (name + "\n").encode("utf-8"))
    _fsync_dir(out)


def _fsync_path(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes renames and new directory entries durable; not possible on every platform
    # (Windows cannot open a directory), where the rename is still atomic.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _read_latest_name(out: Path) -> str | None:
    try:
        return (out / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict[str, Any]:
    """Python's and torch's global RNG states (CUDA's too when initialised), in a form
    ``torch.load(weights_only=True)`` reads back; restore with :func:`set_rng_state`."""
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
