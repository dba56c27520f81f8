"""bench.py's report: the markdown tables and the same numbers as JSON.

* :func:`machine_line`: the CPU or GPU, threads and library versions;
* :func:`train_table` and :func:`gen_table`: the training and generation tables;
* :func:`report`: the whole ``bench.md`` (how it measured, then the tables) and
  ``bench.json``.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import tfs_decoder

from measure import Peak, flops_per_step, plural
from rounds import PROMPT, GenRow, Row, Settings, generation_shape


def machine_line(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"CPU {cpu}",
        f"{torch.get_num_threads()} torch threads",
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"tfs from {Path(tfs_decoder.__file__).parents[1]}",
    ]
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        parts.append("transformers not installed")
    if device.type == "cuda":
        parts.insert(0, f"GPU {torch.cuda.get_device_name(device)}")
    return ", ".join(parts)


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _precision(dtype: torch.dtype | None) -> str:
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def train_table(
    s: Settings, rows: list[Row], flops: float, peak_flops: float
) -> tuple[list[str], list[dict[str, Any]]]:
    """The training table's markdown lines and JSON rows."""
    cuda = s.device.type == "cuda"
    base = {row.compiled: row for row in rows if row.candidate == "tfs" and row.median_s}
    lines = [
        "| candidate | tokens/s | vs tfs | MFU | step ms | saved/token | params+opt | "
        + ("peak | " if cuda else "")
        + "params | notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | "
        + ("---: | " if cuda else "")
        + "---: | --- |",
    ]
    json_rows = []
    for row in rows:
        median = row.median_s
        tps = s.shape.tokens / median if median else None
        tfs = base.get(row.compiled)
        ratio = tfs.median_s / median if median and tfs and tfs.median_s else None
        mfu = flops / median / peak_flops if median else None
        notes = row.note
        if row.compiled and not row.error:
            notes += f"; warm-up incl. compile {row.warmup_s:.0f} s"
        if row.error:
            notes += f"; {row.error}"
        saved = row.saved_bytes_per_token
        cells = [
            f"`{row.label}`",
            _fmt(tps, ",.0f"),
            _fmt(ratio, ".2f"),
            "n/a" if mfu is None else f"{100 * mfu:.1f}%",
            _fmt(None if median is None else 1e3 * median, ".1f"),
            "n/a" if saved is None else f"{saved / 1024:,.1f} KiB",
            f"{row.state_bytes / 2**20:,.0f} MiB" if row.state_bytes else "n/a",
        ]
        if cuda:
            cells.append(f"{row.peak_bytes / 2**20:,.0f} MiB" if row.peak_bytes else "n/a")
        cells += [f"{row.params / 1e6:.2f} M" if row.params else "n/a", notes]
        lines.append("| " + " | ".join(cells) + " |")
        json_rows.append(
            asdict(row)
            | {
                "label": row.label,
                "median_step_s": median,
                "tokens_per_s": tps,
                "ratio_to_tfs": ratio,
                "mfu": mfu,
            }
        )
    return lines, json_rows


def gen_table(s: Settings, gens: list[GenRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """The generation table's markdown lines and JSON rows."""
    base = {gen.use_cache: gen for gen in gens if gen.candidate == "tfs" and gen.median_s}
    n_ctx = generation_shape(s).n_ctx
    lines = [
        f"Generation: {s.gen_new} new tokens after a {PROMPT}-token prompt, batch "
        f"{s.gen_batch} (tokens/s counts every row's), greedy, "
        f"eval mode, the same widths with n_ctx {n_ctx}, {_precision(s.dtype)}; "
        f"medians of {plural(s.gen_repeats, 'alternating run')}. tfs: "
        "`Decoder.generate(temperature=0.0, use_cache=...)`; hf: `generate(do_sample=False, "
        "min_new_tokens=max_new_tokens, use_cache=...)` on the tfs model's twin "
        "(`to_hf_gpt2`, the same weights); ref has no cache: a loop that runs the whole "
        "sequence for every token. `vs tfs`: against tfs with the same cache setting.",
        "",
        "| candidate | tokens/s | seconds | vs tfs | notes |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    json_rows = []
    for gen in gens:
        median = gen.median_s
        tps = s.gen_batch * s.gen_new / median if median else None
        tfs = base.get(gen.use_cache)
        ratio = tfs.median_s / median if median and tfs and tfs.median_s else None
        notes = []
        same = [o.label for o in gens if o is not gen and gen.tokens and o.tokens == gen.tokens]
        if same:
            notes.append("same tokens as " + ", ".join(same))
        if gen.error:
            notes.append(gen.error)
        lines.append(
            f"| `{gen.label}` | {_fmt(tps, ',.0f')} | {_fmt(median, '.2f')} | "
            f"{_fmt(ratio, '.2f')} | {'; '.join(notes)} |"
        )
        json_rows.append(
            asdict(gen)
            | {"label": gen.label, "median_s": median, "tokens_per_s": tps, "ratio_to_tfs": ratio}
        )
    return lines, json_rows


def report(
    s: Settings,
    rows: list[Row],
    gens: list[GenRow],
    peak: Peak | None,
    elapsed: float,
    load: tuple[float, float],
) -> tuple[str, dict[str, Any]]:
    """The markdown report and the same numbers as a JSON-ready dict."""
    flops, n_matmul = flops_per_step(s.shape)
    peak_flops = peak.flops() if peak else math.nan
    peak_note = peak.describe() if peak else "not measured"
    cuda = s.device.type == "cuda"
    lines = [
        f"# tfs speed benchmark: {s.device.type}, shape `{s.shape_name}`",
        "",
        f"- machine: {machine_line(s.device)}; 1-minute load average {load[0]:.2f} at the "
        f"start, {load[1]:.2f} at the end",
        f"- shape: {s.shape.describe()}; learned positions, GELU (tanh), untied W_U",
        f"- precision: {_precision(s.dtype)}"
        + ("; `torch.set_float32_matmul_precision('high')`" if cuda else ""),
        "- step: forward, loss, backward, `torch.optim.AdamW(lr=1e-4, weight_decay=0.1)` "
        "step (`fused=True`, as `tfs train` uses), `zero_grad(set_to_none=True)`. Loss: "
        "mean cross-entropy of the next token over n_ctx - 1 positions (tfs: "
        "`tfs_decoder.next_token_loss`; "
        "others: `F.cross_entropy` on shifted logits). Compiled rows: `torch.compile` "
        "(default mode) of forward + loss; the optimizer step stays eager.",
        f"- timing: {plural(s.warmup, 'warm-up step')} per row (compilation included), "
        f"then {plural(s.repeats, 'round')} in rotated order of "
        f"{plural(s.steps, 'step')} per row, each step timed alone; the median step. "
        "tokens/s = batch x n_ctx / step time. `vs tfs`: against the tfs row of the same "
        "mode (eager or compiled).",
        "- MFU: FLOPs per step = tokens x (6 N + 12 n_layers n_ctx d_model) = "
        f"{flops / 1e9:,.2f} GFLOP, N = {n_matmul / 1e6:.2f} M weights in matrix products "
        "(the blocks' and W_U; the embeddings are lookups), as in PaLM appendix B and "
        f"nanoGPT's estimate_mfu; peak: {peak_note}",
        "- memory: `saved/token` = bytes autograd saves for backward in one eager forward "
        "and loss (`saved_tensors_hooks`, each storage once, parameters excluded), per "
        "token; `params+opt` = parameters and AdamW state"
        + (
            "; `peak` = `torch.cuda.max_memory_allocated` during its steps above what was "
            "resident, plus its own params+opt (its peak if it ran alone)"
            if cuda
            else "; a CPU has no allocator peak counter"
        ),
        "",
    ]
    train_json: list[dict[str, Any]] = []
    if rows:
        train_lines, train_json = train_table(s, rows, flops, peak_flops)
        lines += train_lines
    gen_json: list[dict[str, Any]] = []
    if gens:
        gen_lines, gen_json = gen_table(s, gens)
        lines += ["", *gen_lines]
    lines += ["", f"Total wall time {elapsed:.0f} s."]
    data = {
        "machine": machine_line(s.device),
        "load_average_1min": {"start": load[0], "end": load[1]},
        "device": s.device.type,
        "shape_name": s.shape_name,
        "shape": asdict(s.shape),
        "precision": _precision(s.dtype),
        "flops_per_step": flops,
        "matmul_params": n_matmul,
        "peak_flops": peak_flops,
        "peak_samples": peak.samples if peak else [],
        "peak_source": peak_note,
        "warmup_steps": s.warmup,
        "repeats": s.repeats,
        "steps_per_repeat": s.steps,
        "train": train_json,
        "generation": {
            "new_tokens": s.gen_new,
            "batch": s.gen_batch,
            "prompt": PROMPT,
            "rows": gen_json,
        },
        "wall_s": elapsed,
    }
    return "\n".join(lines) + "\n", data
