"""Argument validation at the packages' public boundaries."""

from __future__ import annotations


def require_positive_ints(**values: object) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive int.

    ``require_positive_ints(d_model=d_model, n_heads=n_heads)``; a bool is not taken for an
    int. The message names the argument, what was expected and what came:
    ``d_model: expected a positive int, got 0``.
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
