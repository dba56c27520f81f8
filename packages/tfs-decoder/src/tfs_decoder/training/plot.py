"""The loss-curve PNG: training and validation loss against optimiser step."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tfs_decoder.training.files import atomic_path


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, one dict per line, blank lines skipped."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    return records


def _points(records: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps: list[int] = []
    values: list[float] = []
    for record in records:
        value = record.get(key)
        if value is not None and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def plot_losses(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Draw ``train_loss`` and ``val_loss`` (nats/token) of ``records`` against ``step``.

    Records whose value is ``None`` (no evaluation at that step) or not finite are left
    out of that curve. The PNG is written next to ``path`` under a temporary name, then
    renamed over ``path``, so a reader never sees a half-written image. matplotlib is
    imported here, so importing :mod:`tfs_decoder` stays light; the figure is drawn by
    its own Agg canvas, without pyplot, so no display is needed and the backend of a
    caller's interactive session is left alone.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.figure import Figure

    records = list(records)
    path = Path(path)
    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    train_steps, train_losses = _points(records, "train_loss")
    val_steps, val_losses = _points(records, "val_loss")
    if train_steps:
        axes.plot(train_steps, train_losses, label="train", color="tab:blue", linewidth=1.2)
    if val_steps:
        axes.plot(
            val_steps, val_losses, label="validation", color="tab:orange", marker="o", markersize=3
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(title if title is not None else "loss")
    axes.grid(True, alpha=0.3)
    if train_steps or val_steps:
        axes.legend()
    figure.tight_layout()

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
