"""The loss-curve PNG and the metrics reader."""

from __future__ import annotations

import json
from pathlib import Path

from tfs_decoder.training.plot import plot_losses, read_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_read_metrics_reads_one_record_per_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    records = [{"step": 1, "train_loss": 2.0, "val_loss": None}, {"step": 2, "val_loss": 1.5}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert read_metrics(path) == records


def test_plot_losses_writes_a_png_atomically(tmp_path: Path) -> None:
    records: list[dict[str, float | None]] = [
        {"step": 10, "train_loss": 3.0, "val_loss": None},
        {"step": 20, "train_loss": 2.5, "val_loss": 2.6},
        {"step": 30, "train_loss": float("nan"), "val_loss": 2.4},
    ]
    path = tmp_path / "sub" / "loss.png"
    assert plot_losses(records, path, title="test") == path
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000
    # Only the PNG is left: the temporary file was renamed over it.
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]


def test_plot_losses_replaces_an_existing_png_and_accepts_no_records(tmp_path: Path) -> None:
    path = tmp_path / "loss.png"
    path.write_bytes(b"old")
    plot_losses([], path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
