"""tfs_embeddings.checks.*_mistakes: each known mistake of the token embedding, the
positional embedding and the unembedding is named by its component's check, and none is
named for tfs's own components."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from tfs_core.checking import Catalogue, Formula
from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed
from tfs_embeddings.checks import Report, check_embed, check_pos_embed, check_unembed
from tfs_embeddings.checks.embed import EMBED, EMBED_CATALOGUE
from tfs_embeddings.checks.pos_embed import POS_EMBED, POS_EMBED_CATALOGUE
from tfs_embeddings.checks.unembed import UNEMBED, UNEMBED_CATALOGUE

COMPONENTS: dict[str, tuple[Callable[..., Report], Callable[..., nn.Module], Catalogue]] = {
    "embed": (check_embed, Embed, EMBED_CATALOGUE),
    "pos-embed": (check_pos_embed, LearnedPositionalEmbedding, POS_EMBED_CATALOGUE),
    "unembed": (check_unembed, Unembed, UNEMBED_CATALOGUE),
}
CONTRACTS = {"embed": EMBED, "pos-embed": POS_EMBED, "unembed": UNEMBED}
NAMED = [
    (name, mistake)
    for name, (_, _, catalogue) in COMPONENTS.items()
    for mistake in catalogue.mistakes
]


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_there_are_at_least_four_each(name: str) -> None:
    mistakes = COMPONENTS[name][2].mistakes
    assert len(mistakes) >= 4
    assert len({m.says for m in mistakes}) == len(mistakes)


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_the_plain_formula_is_tfs_component(name: str) -> None:
    """On every probe the catalogue's formula computes what tfs's component does, and the
    check names no mistake in tfs's component."""
    check, cls, catalogue = COMPONENTS[name]
    outputs = catalogue.outputs(catalogue.correct)
    for (weights, inputs), want in zip(catalogue.probes(), outputs, strict=True):
        reference = cls(**CONTRACTS[name].kwargs())
        reference.load_state_dict(weights)
        with torch.no_grad():
            torch.testing.assert_close(reference(*inputs), want, atol=1e-5, rtol=1e-5)
    report = check(cls, learning=False)
    assert report.ok, str(report)
    assert report.mistake is None


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_every_mistake_is_told_apart(name: str, expect_told_apart: Callable[..., None]) -> None:
    expect_told_apart(COMPONENTS[name][2])


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize(("name", "mistake"), NAMED, ids=[f"{n}-{m.__name__}" for n, m in NAMED])
def test_each_mistake_is_named(
    name: str, mistake: type[Formula], expect_mistake_named: Callable[..., None]
) -> None:
    check, cls, _ = COMPONENTS[name]
    expect_mistake_named(check, cls, mistake)
