"""Every Python block in the READMEs and the documentation pages runs, as a reader would
paste it.

Here rather than in each package's tests because the top README and the docs use all the
packages, which this session installs. A package README's blocks run in order in one
namespace, and a ``self.x = ...`` fragment there runs with ``self`` a module that already
holds an attention and an MLP. The top README, tfs-core's and the ``docs/*.md`` pages promise more:
each block runs alone, in a fresh namespace. A block preceded by
``<!-- not run by the tests: why -->`` is skipped (and there may be only a few: the count
is pinned below).
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
    "packages/tfs-core/README.md",
    "packages/tfs-embeddings/README.md",
    "packages/tfs-attention/README.md",
    "packages/tfs-mlp/README.md",
    "packages/tfs-decoder/README.md",
]
DOCS = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md"))
PAGES = READMES + DOCS
# Pages whose every block stands alone.
STANDALONE = {"README.md", "packages/tfs-core/README.md", *DOCS}
BLOCK = re.compile(r"(<!-- not run by the tests: [^>]*-->\n)?```python\n(.*?)```", re.S)


def blocks(readme: str) -> list[tuple[str, bool]]:
    """``(code, runs)`` for each Python block of ``readme``."""
    text = (ROOT / readme).read_text(encoding="utf-8")
    return [(code, not marker) for marker, code in BLOCK.findall(text)]


def test_only_the_marked_blocks_are_skipped() -> None:
    skipped = {page: sum(not runs for _, runs in blocks(page)) for page in PAGES}
    assert skipped == {page: 0 for page in PAGES} | {"packages/tfs-decoder/README.md": 2}


def test_the_docs_pages_are_found() -> None:
    assert {"docs/index.md", "docs/curriculum.md", "docs/training.md"} <= set(DOCS)


@pytest.mark.parametrize("page", PAGES)
def test_page_python_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that train write their run folder here
    found = blocks(page)
    # Counted apart from BLOCK, so that a pattern that misses blocks fails here.
    assert len(found) == (ROOT / page).read_text(encoding="utf-8").count("```python\n")
    namespace = _namespace(page)
    ran = 0
    for code, runs in found:
        if runs:
            if page in STANDALONE:
                namespace = _namespace(page)
            exec(compile(code, f"{page} block {ran}", "exec"), namespace)
            ran += 1
    if page in READMES:
        assert ran >= 2, f"{page}: expected runnable Python blocks, found {ran}"


def _namespace(page: str) -> dict[str, object]:
    """A fresh namespace for ``page``'s blocks, with torch's seed reset: empty on a page
    whose blocks stand alone, else holding what a package README's fragments assume."""
    torch.manual_seed(0)
    if page in STANDALONE:
        return {}
    owner = nn.Module()
    owner.attn = MultiHeadAttention(64, 4)
    owner.mlp = MLP(64, 256)
    return {"self": owner, "d_model": 64}
