"""Where and in what precision training runs: ``--device`` and ``--dtype``."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from tfs_decoder.training.config import DTYPES, ConfigError
from tfs_decoder.training.distributed import DistInfo


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """The device ``name`` means here: ``"auto"`` picks CUDA, then MPS (one process only),
    then CPU. Under DDP on CUDA each process takes ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: the requested device is not available.
    """
    info = info if info is not None else DistInfo()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif not info.enabled and _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device: {name!r} requested but CUDA is not available "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if name == "cuda":
            return torch.device("cuda", info.local_rank if info.enabled else 0)
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"--device: expected cuda or cuda:N, got {name!r}") from None
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"--device: {name!r} requested but there are {count} CUDA devices")
        return device
    if name == "mps":
        if not _mps_available():
            raise ConfigError(
                "--device: 'mps' requested but MPS is not available; use --device cpu"
            )
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``name`` on ``device``; ``None`` means plain float32.

    ``"auto"`` is bfloat16 on CUDA devices that support it, float32 elsewhere.
    """
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    dtype = DTYPES[name]
    return None if dtype == torch.float32 else dtype


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
