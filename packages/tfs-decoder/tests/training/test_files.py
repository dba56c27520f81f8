"""atomic_path / write_text_atomic: a reader sees the old file or the new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfs_decoder.training.files import atomic_path, write_text_atomic


def test_write_replaces_the_contents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sample.txt"
    target.write_text("old", encoding="utf-8")
    write_text_atomic(target, "new ünïcode")
    assert target.read_text(encoding="utf-8") == "new ünïcode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.txt"]


def _write_half_then_fail(target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError(f"disk full while writing {tmp.name}")


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "loss.png"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"disk full while writing \.loss\.png\.tmp-\d+$"):
        _write_half_then_fail(target)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
