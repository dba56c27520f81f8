"""The heatmaps behind ``tfs attention-plot``: the pixels drawn are the model's own
attention pattern and tokens label the axes. (The command itself is tested in test_cli.py.)

The model is an untrained tiny Decoder whose large init_std gives patterns far from
uniform, so a wrong layer or head would show.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from tfs_decoder import Decoder, DecoderConfig
from tfs_decoder.training.attention_plot import (
    MAX_TICK_LABELS,
    attention_figure,
    attention_patterns,
    plot_attention,
    token_label,
)
from tfs_decoder.training.tokenizer import CharTokenizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARS = "abcdefgh \n\\"
# Three heads: a 2 x 2 grid with one empty cell, so the grid arithmetic is exercised.
CONFIG = DecoderConfig(
    d_vocab=len(CHARS), d_model=16, n_heads=3, d_head=4, d_mlp=32, n_layers=2, n_ctx=12,
    init_std=0.5,
)  # fmt: skip
PROMPT_TEXT = "ab cd\nef\\g"


def assert_png(path: Path) -> tuple[int, int]:
    """``path`` is a non-trivial PNG; returns its (width, height) from the IHDR chunk."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 5000
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def causal_patterns(n_heads: int, n_pos: int, seed: int) -> Tensor:
    """Random causal attention patterns ``[head, dest, src]``: rows sum to 1, 0 above the
    diagonal."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_heads, n_pos, n_pos, generator=g) * 3
    future = torch.ones(n_pos, n_pos, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, -math.inf).softmax(-1)


def reference_patterns(model: Decoder, ids: Sequence[int], layer: int) -> Tensor:
    """``softmax(q k^T / sqrt(d_head) + causal mask)`` per head, from the layer's queries
    and keys (hook_q/hook_k), independent of hook_pattern."""
    tokens = torch.tensor([list(ids)])
    names = [f"blocks.{layer}.attn.hook_q", f"blocks.{layer}.attn.hook_k"]
    _, cache = model.run_with_cache(tokens, names=names)
    q, k = cache[names[0]][0], cache[names[1]][0]  # [pos, head, d_head]
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    future = torch.ones(len(ids), len(ids), dtype=torch.bool).triu(1)
    return scores.masked_fill(future, -math.inf).softmax(-1)


# ---------------------------------------------------------------------------------------
# The figure


def test_token_labels_make_whitespace_visible() -> None:
    cases = {"a": "a", " ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\",
             "\x00": "\\x00", " the\n": "␣the\\n", "é": "é", "": "''"}  # fmt: skip
    assert {text: token_label(text) for text in cases} == cases


def test_figure_draws_each_head_with_tokens_on_the_axes() -> None:
    patterns = causal_patterns(3, 5, seed=0)
    labels = ["a", " ", "\n", "b", "c"]
    figure = attention_figure(patterns, labels, title="my title")
    assert figure.get_suptitle() == "my title"
    heads = [axes for axes in figure.axes if axes.get_visible() and axes.get_images()]
    assert [axes.get_title() for axes in heads] == ["head 0", "head 1", "head 2"]
    # 2 x 2 grid: the fourth cell hidden; plus one colour bar for all heads.
    assert sum(not axes.get_visible() for axes in figure.axes) == 1
    expected = ["a", "␣", "\\n", "b", "c"]
    for h, axes in enumerate(heads):
        (image,) = axes.get_images()
        array = image.get_array()
        assert array is not None
        drawn = torch.tensor(array.tolist())
        torch.testing.assert_close(drawn, patterns[h], atol=0, rtol=0)
        assert image.get_clim() == (0.0, 1.0)
        assert [t.get_text() for t in axes.get_xticklabels()] == expected
        assert [t.get_text() for t in axes.get_yticklabels()] == expected
        assert list(axes.get_xticks()) == list(range(5))
        # imshow puts row 0 (the first destination) at the top: dest down the y axis.
        bottom, top = axes.get_ylim()
        assert bottom > top
        assert "source" in axes.get_xlabel()
        assert "destination" in axes.get_ylabel()


def test_long_sequences_label_every_kth_token() -> None:
    n_pos = 2 * MAX_TICK_LABELS + 5
    labels = [chr(ord("A") + i % 26) for i in range(n_pos)]
    figure = attention_figure(causal_patterns(1, n_pos, seed=1), labels, title="t")
    axes = figure.axes[0]
    ticks = [int(t) for t in axes.get_xticks()]
    assert 1 < len(ticks) <= MAX_TICK_LABELS
    assert ticks == list(range(0, n_pos, ticks[1]))
    assert [t.get_text() for t in axes.get_xticklabels()] == [labels[i] for i in ticks]


def test_figure_rejects_labels_that_do_not_match_positions() -> None:
    with pytest.raises(ValueError, match=r"labels: expected 4 labels.*got 3"):
        attention_figure(causal_patterns(2, 4, seed=0), ["a", "b", "c"], title="t")


def test_plot_attention_writes_a_png_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "attn.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    assert plot_attention(causal_patterns(3, 6, seed=2), list("abcdef"), out, title="t") == out
    assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["attn.png"]


# ---------------------------------------------------------------------------------------
# The pattern read from the model


def test_attention_patterns_are_the_layers_softmax() -> None:
    torch.manual_seed(0)
    model = Decoder(CONFIG)
    ids = CharTokenizer(list(CHARS)).encode(PROMPT_TEXT)
    tokens = torch.tensor([ids])
    for layer in range(CONFIG.n_layers):
        patterns = attention_patterns(model, tokens, layer)
        assert patterns.shape == (1, CONFIG.n_heads, len(ids), len(ids))
        torch.testing.assert_close(
            patterns[0], reference_patterns(model, ids, layer), atol=1e-6, rtol=1e-5
        )
        torch.testing.assert_close(
            patterns.sum(-1), torch.ones(1, CONFIG.n_heads, len(ids)), atol=1e-6, rtol=0
        )
        assert torch.all(patterns[0].triu(1) == 0)
    with pytest.raises(ValueError, match=r"layer: expected an int in \[0, 2\), got 2"):
        attention_patterns(model, tokens, 2)
