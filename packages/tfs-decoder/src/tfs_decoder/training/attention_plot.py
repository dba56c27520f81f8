"""Attention patterns as pictures: one heatmap per head of one layer, tokens on the axes.

Head ``h`` of a layer weighs source position ``src`` for destination position ``dest`` by
``A_h[dest, src] = softmax(q_h k_h^T / sqrt(d_head) + mask)[dest, src]`` ("A Mathematical
Framework for Transformer Circuits", section "Attention heads are independent"): each row
sums to 1, and a causal model leaves everything above the diagonal 0. ``tfs
attention-plot`` reads these from the hook point ``blocks.{layer}.attn.hook_pattern`` and
draws them with :func:`plot_attention`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_decoder.hooks import run_with_cache
from tfs_decoder.training.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_TICK_LABELS",
    "attention_figure",
    "attention_patterns",
    "plot_attention",
    "token_label",
]

MAX_TICK_LABELS = 64
"""At most this many tokens are labelled on each axis; longer sequences label every k-th."""

# Escapes that keep invisible tokens visible; a backslash is doubled so that the label of
# a real backslash-n (two characters) differs from that of a newline.
_VISIBLE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def token_label(text: str) -> str:
    """``text`` (one token's text) as a tick label: a space as ``␣``, a newline as ``\\n``,
    a tab as ``\\t``, a backslash as ``\\\\``, other unprintable characters as Python
    escapes (``\\x00``); the empty string as ``''``."""
    if not text:
        return "''"
    return "".join(_VISIBLE.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in text)


def attention_patterns(
    model: nn.Module, tokens: Int[Tensor, "batch pos"], layer: int
) -> Float[Tensor, "batch head pos pos"]:
    """The attention pattern ``[batch, head, dest, src]`` of block ``layer`` for ``tokens``,
    read from its hook point ``blocks.{layer}.attn.hook_pattern`` (no gradients): a
    :class:`~tfs_decoder.Decoder`, or any model whose ``blocks`` have such hook points.

    Raises:
        ValueError: ``layer`` is not in ``[0, n_layers)``, or the model has no such hook point.
    """
    n_layers = len(getattr(model, "blocks", ()))
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n_layers:
        raise ValueError(f"layer: expected an int in [0, {n_layers}), got {layer!r}")
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = run_with_cache(model, tokens, names=[name])
    return cache[name]


def attention_figure(
    patterns: Float[Tensor, "head pos pos"], labels: Sequence[str], *, title: str
) -> Figure:
    """A figure with one heatmap per head of ``patterns`` ``[head, dest, src]``, in a grid of
    ``ceil(sqrt(head))`` columns: the destination (query) token down the y axis, the source
    (key) token along the x axis, all heads on one colour scale from 0 to 1 with one colour
    bar. ``labels[i]`` is position ``i``'s token text, shown through :func:`token_label`;
    with more than :data:`MAX_TICK_LABELS` tokens only every k-th is labelled.

    The figure is drawn by its own Agg canvas, without pyplot: no display is needed and a
    caller's interactive backend is left alone.

    Raises:
        ValueError: ``labels`` does not hold one label per position.
    """
    from matplotlib.figure import Figure

    n_heads, n_pos = patterns.shape[0], patterns.shape[-1]
    if len(labels) != n_pos:
        raise ValueError(
            f"labels: expected {n_pos} labels, one per position of patterns, got {len(labels)}"
        )
    ticks = list(range(0, n_pos, math.ceil(n_pos / MAX_TICK_LABELS)))
    tick_text = [token_label(labels[i]) for i in ticks]
    fontsize = 8 if len(ticks) <= 32 else 6
    panel = min(max(2.5, 0.12 * len(ticks) + 1.0), 9.0)  # inches per head
    n_cols = math.ceil(math.sqrt(n_heads))
    n_rows = math.ceil(n_heads / n_cols)

    figure = Figure(figsize=(n_cols * panel + 1.0, n_rows * panel + 0.6), layout="constrained")
    grid = figure.subplots(n_rows, n_cols, squeeze=False)
    values = patterns.detach().float().cpu().numpy()
    images = []
    for h, axes in enumerate(grid.flat):
        if h >= n_heads:
            axes.set_visible(False)
            continue
        images.append(
            axes.imshow(values[h], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        )
        axes.set_title(f"head {h}", fontsize=10)
        axes.set_xticks(ticks, tick_text, rotation=90, fontsize=fontsize)
        axes.set_yticks(ticks, tick_text, fontsize=fontsize)
        axes.set_xlabel("source (key) token", fontsize=8)
        axes.set_ylabel("destination (query) token", fontsize=8)
    # vmin/vmax are the same for every head, so one colour bar reads them all.
    figure.colorbar(images[0], ax=grid.ravel().tolist(), shrink=0.8, label="attention weight")
    figure.suptitle(title)
    return figure


def plot_attention(
    patterns: Float[Tensor, "head pos pos"],
    labels: Sequence[str],
    out: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """Draw :func:`attention_figure` and write it to ``out`` as a PNG.

    The PNG is written beside ``out`` under a temporary name and renamed over it, so a
    reader never sees a half-written image; missing parent directories are created.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    figure = attention_figure(patterns, labels, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # A token the font has no glyph for is drawn as a box; a warning per glyph is noise.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from")
        with atomic_path(out) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    return out
