"""The runtime shape checker installed by conftest.py is on for tfs_mlp.

Without it, a wrong-rank input would reach MLP.forward's own check and raise ValueError;
with it, jaxtyping rejects the call before the body runs.
"""

from __future__ import annotations

import pytest
import torch
from jaxtyping import TypeCheckError

from tfs_mlp import MLP


def test_type_check_error_is_a_type_error() -> None:
    assert issubclass(TypeCheckError, TypeError)


@pytest.mark.parametrize("shape", [(3, 4), (4,), (1, 2, 3, 4)])
def test_wrong_rank_input_raises_type_check_error(shape: tuple[int, ...]) -> None:
    mlp = MLP(4, 8)
    with pytest.raises(TypeCheckError, match="x"):
        mlp(torch.randn(*shape))


def test_integer_input_raises_type_check_error() -> None:
    mlp = MLP(4, 8)
    with pytest.raises(TypeCheckError):
        mlp(torch.ones(2, 3, 4, dtype=torch.long))


def test_constructor_argument_types_are_checked() -> None:
    with pytest.raises(TypeCheckError, match="d_model"):
        MLP(2.5, 8)  # type: ignore[arg-type]
