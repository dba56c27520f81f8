"""Every Python block in the READMEs runs, in order, as a reader would paste it.

Here rather than in each package's tests because the top README uses all four packages,
which this session installs. A block preceded by ``<!-- not run by the tests: why -->``
is skipped (and there may be only a few: the count is pinned below); a ``self.x = ...``
fragment runs with ``self`` a module that already holds an attention and an MLP.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from tfs_attention import MultiHeadAttention
from tfs_mlp import MLP

ROOT = Path(__file__).parents[1]
READMES = [
    "README.md",
    "packages/tfs-embeddings/README.md",
    "packages/tfs-attention/README.md",
    "packages/tfs-mlp/README.md",
    "packages/tfs-decoder/README.md",
]
BLOCK = re.compile(r"(<!-- not run by the tests: [^>]*-->\n)?```python\n(.*?)```", re.S)


def blocks(readme: str) -> list[tuple[str, bool]]:
    """``(code, runs)`` for each Python block of ``readme``."""
    text = (ROOT / readme).read_text(encoding="utf-8")
    return [(code, not marker) for marker, code in BLOCK.findall(text)]


def test_only_the_marked_blocks_are_skipped() -> None:
    skipped = {readme: sum(not runs for _, runs in blocks(readme)) for readme in READMES}
    assert skipped == {readme: 0 for readme in READMES} | {"packages/tfs-decoder/README.md": 2}


@pytest.mark.parametrize("readme", READMES)
def test_readme_python_blocks_run(
    readme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that train write their run folder here
    torch.manual_seed(0)
    owner = nn.Module()
    owner.attn = MultiHeadAttention(64, 4)
    owner.mlp = MLP(64, 256)
    namespace: dict[str, object] = {"self": owner, "d_model": 64}
    ran = 0
    for code, runs in blocks(readme):
        if runs:
            exec(compile(code, f"{readme} block {ran}", "exec"), namespace)
            ran += 1
    assert ran >= 2, f"{readme}: expected runnable Python blocks, found {ran}"
