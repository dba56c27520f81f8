"""tfs_attention.checks.attention_mistakes: each known attention mistake is named by
check_attention, and none is named for tfs's own attention."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tfs_attention import MultiHeadAttention
from tfs_attention.checks import check_attention
from tfs_attention.checks.attention import CATALOGUE
from tfs_attention.checks.attention_mistakes import MISTAKES, Attention


def test_there_are_at_least_twelve() -> None:
    assert len(MISTAKES) >= 12
    assert len({m.says for m in MISTAKES}) == len(MISTAKES)


def test_the_plain_formula_is_tfs_attention() -> None:
    report = check_attention(MultiHeadAttention, learning=False)
    assert report.ok, str(report)
    assert report.mistake is None
    assert CATALOGUE.correct is Attention


def test_every_mistake_is_told_apart(expect_told_apart: Callable[..., None]) -> None:
    expect_told_apart(CATALOGUE)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.__name__ for m in MISTAKES])
def test_each_mistake_is_named(
    mistake: type[Attention], expect_mistake_named: Callable[..., None]
) -> None:
    expect_mistake_named(check_attention, MultiHeadAttention, mistake)
