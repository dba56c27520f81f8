"""tfs_mlp.checks: tfs's own MLP passes every check, and each bug learners make, planted in
an MLP written independently here, fails a check whose message names the concept."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from tfs_mlp import MLP
from tfs_mlp.checks import check_mlp


class PlainMLP(nn.Module):
    """An MLP as a learner writes it (einsums and GELU's formula), with switches that plant
    bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) * 0.02)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) * 0.02)
        self.b_out = nn.Parameter(torch.zeros(d_model))

    def activation(self, x: Tensor) -> Tensor:
        bug = self.bugs.get
        if bug("activation") == "erf":
            return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
        if bug("activation") == "relu":
            return x.clamp(min=0)
        cubic, scale = bug("cubic", 0.044715), bug("scale", math.sqrt(2 / math.pi))
        return 0.5 * x * (1 + torch.tanh(scale * (x + cubic * x**3)))

    def forward(self, x: Tensor) -> Tensor:
        if self.bugs.get("view_for_transpose"):
            x = x.transpose(1, 2).reshape(x.shape)
        pre = torch.einsum("bpm,mh->bph", x, self.W_in)
        if not self.bugs.get("no_b_in"):
            pre = pre + self.b_in
        out = torch.einsum("bph,hm->bpm", self.activation(pre), self.W_out)
        return out if self.bugs.get("no_b_out") else out + self.b_out


def _planted(**bugs: Any) -> type[PlainMLP]:
    return type("PlainMLP", (PlainMLP,), {"bugs": bugs})


PLANTED = [
    # (bug, switches, the check that must fail, words its message must contain, the
    # mistake named first, if one of the catalogue's)
    ("no b_in", {"no_b_in": True}, "every weight and bias used", "b_in is never used", "b_in is"),
    ("no b_out", {"no_b_out": True}, "every weight and bias used", "b_out is never", "b_out is"),
    ("GELU's 0.044715 as 0.0447", {"cubic": 0.0447}, "GELU", "where GELU gives", None),
    ("GELU's sqrt(2/pi) as sqrt(pi/2)", {"scale": math.sqrt(math.pi / 2)}, "GELU", "x^3", "pi/2"),
    ("exact GELU", {"activation": "erf"}, "GELU", "as the exact GELU 0.5 x (1 + erf", "exact"),
    ("ReLU", {"activation": "relu"}, "GELU", "as ReLU max(0, x) does", "ReLU"),
    (
        "positions mixed by a reshape",
        {"view_for_transpose": True},
        "position-wise",
        "transforms each position on its own",
        None,
    ),
]


def test_tfs_mlp_passes_every_check() -> None:
    report = check_mlp(MLP)
    assert report.ok, str(report)
    assert len(report.results) == 8


def test_the_plain_mlp_passes_every_check() -> None:
    """The independent MLP the bugs are planted in is itself correct."""
    report = check_mlp(PlainMLP, learning=False)
    assert report.ok, str(report)


@pytest.mark.usefixtures("without_runtime_type_checks")
@pytest.mark.parametrize(
    ("bug", "switches", "check", "words", "named"), PLANTED, ids=[p[0] for p in PLANTED]
)
def test_planted_bug_fails_the_check_that_names_it(
    bug: str,
    switches: dict[str, Any],
    check: str,
    words: str,
    named: str | None,
    expect_failure: Callable[..., None],
    expect_named: Callable[..., None],
) -> None:
    report = check_mlp(_planted(**switches), learning=False)
    expect_failure(report, check, words)
    expect_named(report, named)
