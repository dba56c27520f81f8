"""tfs_mlp.checks.mlp_mistakes: each known MLP mistake is named by check_mlp, and none is
named for tfs's own MLP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tfs_mlp import MLP
from tfs_mlp.checks import check_mlp
from tfs_mlp.checks.mlp import CATALOGUE
from tfs_mlp.checks.mlp_mistakes import MISTAKES
from tfs_mlp.checks.mlp_mistakes import MLP as Plain


def test_there_are_at_least_six() -> None:
    assert len(MISTAKES) >= 6
    assert len({m.says for m in MISTAKES}) == len(MISTAKES)


def test_the_plain_formula_is_tfs_mlp() -> None:
    """On every probe the catalogue's formula computes what tfs's MLP does (float32)."""
    assert CATALOGUE.correct is Plain
    for (weights, (x,)), want in zip(CATALOGUE.probes(), CATALOGUE.outputs(Plain), strict=True):
        reference = MLP(*weights["W_in"].shape)
        reference.load_state_dict(weights)
        with torch.no_grad():
            torch.testing.assert_close(reference(x), want, atol=1e-5, rtol=1e-5)
    report = check_mlp(MLP, learning=False)
    assert report.ok, str(report)
    assert report.mistake is None


def test_every_mistake_is_told_apart(expect_told_apart: Callable[..., None]) -> None:
    expect_told_apart(CATALOGUE)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.__name__ for m in MISTAKES])
def test_each_mistake_is_named(
    mistake: type[Plain], expect_mistake_named: Callable[..., None]
) -> None:
    expect_mistake_named(check_mlp, MLP, mistake)
