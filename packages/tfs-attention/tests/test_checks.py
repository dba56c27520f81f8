"""tfs_attention.checks: tfs's own attention passes every check, and each bug learners
make, planted in an attention written independently here, fails a check whose message
names the concept."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_attention.checks import check_attention
from tfs_attention.checks.attention import CONTRACT
from tfs_core.checking import Subject, run_checks


class PlainAttention(nn.Module):
    """Attention as a learner writes it (ARENA 1.1 style), with switches that plant bugs."""

    bugs: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, d_model: int, n_heads: int, d_head: int | None = None, causal: bool = True
    ) -> None:
        super().__init__()
        d_head = d_head or d_model // n_heads
        self.d_head, self.causal = d_head, causal
        for name in ("W_Q", "W_K", "W_V"):
            setattr(self, name, nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02))
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) * 0.02)
        for name in ("b_Q", "b_K", "b_V"):
            setattr(self, name, nn.Parameter(torch.zeros(n_heads, d_head)))
        self.b_O = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        bug = self.bugs.get
        key, value = ("V", "K") if bug("swap_kv") else ("K", "V")
        q = torch.einsum("bpm,hmd->bphd", x, self.get_parameter("W_Q")) + self.get_parameter("b_Q")
        weight, bias = self.get_parameter(f"W_{key}"), self.get_parameter(f"b_{key}")
        k = torch.einsum("bpm,hmd->bphd", x, weight) + bias
        weight, bias = self.get_parameter(f"W_{value}"), self.get_parameter(f"b_{value}")
        v = torch.einsum("bpm,hmd->bphd", x, weight)
        if not bug("no_b_V"):
            v = v + bias
        scale = {
            "sqrt": math.sqrt(self.d_head),
            "d_head": self.d_head,
            "from d_model": math.sqrt(x.shape[-1] // q.shape[2]),  # right only if d_head = that
        }[bug("scale", "sqrt")]
        if bug("k_q"):
            q, k = k, q
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / scale
        if self.causal:
            pos = x.shape[1]
            hidden = torch.ones(pos, pos, dtype=torch.bool).triu(bug("mask_diagonal", 1))
            scores = scores.masked_fill(hidden, -1e5)
        pattern = scores.softmax(dim=bug("softmax_dim", -1))
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        out = torch.einsum("bqhd,hdm->bqm", z, self.W_O) / (z.shape[2] if bug("mean") else 1)
        if bug("raise_"):
            raise RuntimeError("my own mistake")
        return out if bug("no_b_O") else out + self.b_O


def _planted(**bugs: Any) -> type[PlainAttention]:
    return type("PlainAttention", (PlainAttention,), {"bugs": bugs})


PLANTED = [
    # (bug, switches, the check that must fail, words its message must contain, the
    # mistake named first, if one of the catalogue's)
    ("leaky mask", {"mask_diagonal": 2}, "causal mask", "leak into the past", "off by one"),
    ("mask hides the diagonal", {"mask_diagonal": 0}, "causal mask", "attend to itself", None),
    ("softmax over destinations", {"softmax_dim": -2}, "softmax axis", "over source", "(dim=-2)"),
    ("divides by d_head", {"scale": "d_head"}, "scale", "4.0x too small", "divided by d_head"),
    ("no b_O", {"no_b_O": True}, "every weight and bias used", "b_O is never used", "b_O is"),
    ("no b_V", {"no_b_V": True}, "every weight and bias used", "b_V is never used", "b_V is"),
    ("keys and values swapped", {"swap_kv": True}, "values and heads", "from W_V", "swapped"),
    ("heads averaged", {"mean": True}, "values and heads", "heads are summed", "averaged"),
    ("scale from d_model", {"scale": "from d_model"}, "same as tfs", "n_heads=4, d_head=4", None),
    ("scores k q^T", {"k_q": True}, "scale", "not k @ q^T", "k q^T"),
]


def test_tfs_attention_passes_every_check() -> None:
    report = check_attention(MultiHeadAttention)
    assert report.ok, str(report)
    assert len(report.results) == 12


def test_the_plain_attention_passes_every_check() -> None:
    """The independent attention the bugs are planted in is itself correct."""
    report = check_attention(PlainAttention, learning=False)
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
    report = check_attention(_planted(**switches), learning=False)
    expect_failure(report, check, words)
    expect_named(report, named)


def test_check_attention_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_attention(MultiHeadAttention, learning=False)
    assert torch.equal(torch.rand(3), expected)


def test_averaged_heads_skip_the_probes_that_would_blame_scale_and_softmax() -> None:
    """The issue's report: averaged heads failed 'scale' and 'softmax axis', both right."""
    report = str(check_attention(_planted(mean=True), learning=False))
    assert "SKIP  softmax axis (depends on: values and heads)" in report
    assert "SKIP  scale (depends on: values and heads, softmax axis)" in report
    assert "SKIP  gradients (depends on: same as tfs)" in report
    assert "FAIL  scale" not in report
    assert "look for a .detach()" not in report


def test_an_exception_in_the_learners_forward_is_shown_once() -> None:
    report = check_attention(_planted(raise_=True), learning=False)
    text = str(report)
    assert text.count("RuntimeError: my own mistake") == 1, text
    assert text.count(f"{__file__}:") == 1, text  # their file and line, once
    assert "raised the same RuntimeError as 'shapes and dtypes'" in text
    assert "ERROR" not in text


def test_an_exception_in_a_checks_own_code_is_an_error_not_the_learners() -> None:
    def broken(subject: Subject) -> None:
        _ = 1 / 0

    report = run_checks("attention", MultiHeadAttention, CONTRACT, [("broken", broken)])
    (result,) = [r for r in report.results if r.name == "broken"]
    assert result.status == "error"
    assert "ZeroDivisionError" in result.message
    assert "a bug in tfs's checks, not in your code" in result.message
    assert not report.ok


def test_the_checks_run_on_one_thread_and_leave_the_count_alone() -> None:
    seen: list[int] = []

    def count(subject: Subject) -> None:
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_checks("attention", MultiHeadAttention, CONTRACT, [("threads", count)])
        assert seen == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_learning_check_waits_for_the_shapes() -> None:
    """A learner's shape bug that happened to fit the task's sizes trained to 20% and read
    as a separate lesson; now the learning check is skipped."""
    report = str(check_attention(_planted(raise_=True)))
    assert "SKIP  learning: moving information (depends on: shapes and dtypes)" in report
