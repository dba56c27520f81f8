"""The mistake catalogues of LayerNorm, the block, the decoder and the loss
(``tfs_decoder.checks.*_mistakes``): each mistake is named by its component's check, and
none is named for tfs's own component."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tfs_decoder.block import ResidualBlock
from tfs_decoder.checks import block, check_block, check_decoder, check_layernorm, check_loss
from tfs_decoder.checks import decoder as decoder_checks
from tfs_decoder.checks import layernorm as layernorm_checks
from tfs_decoder.checks import loss as loss_checks
from tfs_decoder.decoder import Decoder
from tfs_decoder.layernorm import LayerNorm
from tfs_decoder.loss import next_token_loss

COMPONENTS: list[tuple[Callable[..., Any], Any, Any, int]] = [
    # (check, tfs's component, its check module, the fewest mistakes the catalogue holds)
    (check_layernorm, LayerNorm, layernorm_checks, 8),
    (check_block, ResidualBlock, block, 4),
    (check_decoder, Decoder, decoder_checks, 4),
    (check_loss, next_token_loss, loss_checks, 4),
]
CASES = [
    (check, base, mistake)
    for check, base, module, _ in COMPONENTS
    for mistake in module.CATALOGUE.mistakes
]


@pytest.mark.parametrize(("check", "base", "module", "fewest"), COMPONENTS)
def test_tfs_matches_no_mistake_and_they_are_told_apart(
    check: Callable[..., Any],
    base: Any,
    module: Any,
    fewest: int,
    expect_told_apart: Callable[..., None],
) -> None:
    report = check(base, learning=False)
    assert report.ok, str(report)
    assert report.mistake is None
    assert len(module.CATALOGUE.mistakes) >= fewest
    expect_told_apart(module.CATALOGUE)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize(("check", "base", "mistake"), CASES, ids=[c[2].__name__ for c in CASES])
def test_each_mistake_is_named(
    check: Callable[..., Any], base: Any, mistake: Any, expect_mistake_named: Callable[..., None]
) -> None:
    expect_mistake_named(check, base, mistake)
