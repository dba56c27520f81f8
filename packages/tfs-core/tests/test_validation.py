"""The one positive-int validation: names the argument, what was expected, what came."""

from __future__ import annotations

import pytest

from tfs_core.validation import require_positive_ints


def test_positive_ints_pass() -> None:
    require_positive_ints(d_model=1, n_heads=12)


@pytest.mark.parametrize("value", [0, -3, 2.0, True, None, "4"])
def test_anything_else_is_named_with_what_came(value: object) -> None:
    with pytest.raises(ValueError, match=rf"^n_heads: expected a positive int, got {value!r}$"):
        require_positive_ints(d_model=8, n_heads=value)


def test_the_first_bad_argument_is_the_one_named() -> None:
    with pytest.raises(ValueError, match=r"^d_mlp:"):
        require_positive_ints(d_model=8, d_mlp=0, n_ctx=-1)
