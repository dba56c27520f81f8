"""``tfs exercise`` and ``tfs check``: every starting file is written, builds, and is
reported as not implemented yet; a learner's mistakes end as exit status 1 (a check) or 2
(a usage error) with their own lines and no traceback; tfs's components pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfs_decoder.checks.exercise import COMPONENTS
from tfs_decoder.training.cli import main

Capture = pytest.CaptureFixture[str]


def test_list_names_every_component_in_curriculum_order(capsys: Capture) -> None:
    assert main(["exercise", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [c.name for c in COMPONENTS]
    # docs/curriculum.md's steps, in its order.
    assert names == [
        "pos-embed", "attention", "layernorm", "embed", "mlp", "block", "unembed", "loss",
        "decoder",
    ]  # fmt: skip


@pytest.mark.parametrize("component", COMPONENTS, ids=[c.name for c in COMPONENTS])
def test_each_starting_file_is_checked_as_not_implemented_yet(
    component: object, tmp_path: Path, capsys: Capture
) -> None:
    from tfs_decoder.checks.exercise import Component

    assert isinstance(component, Component)
    out = tmp_path / f"start_{component.template}"
    assert main(["exercise", component.name, "--out", str(out)]) == 0
    command = f"tfs check {component.name} {out}:{component.target}"
    assert command in capsys.readouterr().out
    assert command in out.read_text()  # the file says how to check it
    assert main(["check", component.name, f"{out}:{component.target}", "--no-learning"]) == 1
    report = capsys.readouterr().out
    assert f"not implemented yet: {component.target}" in report
    if component.name != "loss":  # a function has no parameters to check
        assert "PASS  parameters" in report
    assert "FAIL" not in report


def test_exercise_keeps_an_existing_file_unless_forced(tmp_path: Path, capsys: Capture) -> None:
    out = tmp_path / "mine.py"
    out.write_text("my work\n")
    assert main(["exercise", "mlp", "--out", str(out)]) == 2
    assert "--out:" in capsys.readouterr().err
    assert out.read_text() == "my work\n"
    assert main(["exercise", "mlp", "--out", str(out), "--force"]) == 0
    assert "class MLP" in out.read_text()


def test_tfs_components_pass_by_module_path(capsys: Capture) -> None:
    assert main(["check", "attention", "tfs_attention:MultiHeadAttention", "--no-learning"]) == 0
    assert "11 of 11 checks passed" in capsys.readouterr().out


LEARNER_ERRORS = """
import torch
from torch import nn


class Raises(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        raise ValueError("my own mistake")


class Keywords(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()


class Breaks(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_head=None, causal=True) -> None:
        super().__init__()
        self.W_Q = nn.Parameter(torch.zeros(n_heads, d_model, d_model // n_heads))

    def forward(self, x):
        return x @ self.W_Q[0].T  # [.., 32] @ [16, 32]: raises
"""


def _line_of(code: str) -> int:
    return next(n for n, line in enumerate(LEARNER_ERRORS.split("\n"), 1) if code in line)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["check", "attn", "x.py:A"], "COMPONENT: expected one of pos-embed, attention"),
        (["check", "attention", "nowhere.py:A"], "TARGET: no file nowhere.py"),
        (["check", "attention", "no_colon"], "TARGET: expected path/to/file.py:ClassName"),
        (["check", "attention", "no_such_module_here:A"], "TARGET: no module"),
        (["check", "attention", "{learner}:Missing"], "has no 'Missing' (it defines Raises"),
        (["check", "attention", "{learner}:Raises"], "raised ValueError: my own mistake"),
        (["check", "attention", "{learner}:Keywords"], "expected the constructor of tfs's"),
        (["check", "loss", "{learner}:Raises"], "expected a function"),
        (["check", "attention", "{broken}:A"], "SyntaxError"),
        (["exercise", "nothing"], "COMPONENT: expected one of"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(
    argv: list[str], words: str, tmp_path: Path, capsys: Capture
) -> None:
    learner, broken = tmp_path / "learner.py", tmp_path / "broken.py"
    learner.write_text(LEARNER_ERRORS)
    broken.write_text("class A(:\n")
    argv = [a.format(learner=learner, broken=broken) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert words in captured.err
    assert len(captured.err.splitlines()) == 1
    assert "Traceback" not in captured.err
    if "Raises" in argv[-1] and argv[1] == "attention":
        line = _line_of('raise ValueError("my own mistake")')
        assert f"{learner}:{line} in __init__" in captured.err  # the learner's line alone
        assert "_checking.py" not in captured.err


def test_an_error_in_the_learners_forward_fails_checks_with_their_lines(
    tmp_path: Path, capsys: Capture
) -> None:
    learner = tmp_path / "learner.py"
    learner.write_text(LEARNER_ERRORS)
    assert main(["check", "attention", f"{learner}:Breaks", "--no-learning"]) == 1
    report = capsys.readouterr().out
    assert "FAIL  parameters: expected W_K" in report
    assert "raised RuntimeError: " in report
    line = _line_of("return x @ self.W_Q[0].T")
    assert f"{learner}:{line} in forward: return x @ self.W_Q[0].T" in report
    assert "site-packages" not in report
    assert "SKIP  same as tfs: needs the parameters named and shaped as tfs's" in report
