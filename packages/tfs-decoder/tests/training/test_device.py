"""--device and --dtype: what "auto" picks, and a clear error for what is not there."""

from __future__ import annotations

import pytest
import torch

from tfs_decoder.training.config import ConfigError
from tfs_decoder.training.device import resolve_device, resolve_dtype


def test_resolve_device_and_dtype() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and resolve_device("auto").type == "mps":
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) is None
    assert resolve_dtype("fp32", torch.device("cpu")) is None
    assert resolve_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match=r"--device: 'cuda' requested but CUDA is not"):
            resolve_device("cuda")
