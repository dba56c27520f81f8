"""Benchmark (not a test): tfs against the usual fast idiom and transformers' GPT-2, side by side.

In one process it times the same training step (forward, next-token cross-entropy,
backward, AdamW step) for the same model shape with

* ``tfs``: tfs_decoder's ``Decoder``, default from-scratch attention (``tfs-sdpa``: the same
  with ``attention_backend="sdpa"``; ``tfs-fused``: ``tfs-sdpa`` with ``nn.LayerNorm`` for
  its LayerNorms, so only tfs's own code is left where torch has no fused kernel);
* ``ref``: a reference GPT-2 decoder written below from ``nn.Embedding``, ``nn.LayerNorm``,
  ``nn.Linear`` (one fused QKV projection) and ``F.scaled_dot_product_attention``
  (``ref-manual``: the same with a masked softmax written out);
* ``hf-sdpa`` and ``hf-eager``: transformers' ``GPT2LMHeadModel``, random init, with its
  sdpa and eager attention;

alternating the candidates over several rounds and reporting medians (the machines are
noisy). It reports tokens/s, the ratio to tfs, the model FLOP utilisation against a peak
(a measured fp32 matmul on CPU, the published dense bf16 peak on GPU) and memory, then
times greedy generation of 256 tokens with and without the key/value cache.

    python benchmarks/bench.py                          # CPU, the `cpu` shape
    python benchmarks/bench.py --shape cpu-small --quick
    python benchmarks/bench.py --device cuda --shape gpt2-8l --compile
    python benchmarks/bench.py --verify-compile         # graph breaks in tfs's training forward

Writes ``bench.md`` and ``bench.json`` to ``--out`` (default ``runs/bench/<device>-<shape>``).
See benchmarks/README.md.

This file is the command line; the modules beside it hold the rest: ``candidates.py``
(the shapes, the reference decoder and how each candidate is built), ``measure.py``
(step timing, memory, the FLOP/s peak, FLOPs per step, the compile check),
``rounds.py`` (the training and generation rounds under a time budget) and
``report.py`` (the markdown and JSON report).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch._dynamo


def _checkout_on_path() -> None:
    """Without the packages installed (a bare GPU machine with torch, transformers and
    jaxtyping), import them from this checkout."""
    if importlib.util.find_spec("tfs_decoder") is None:
        packages = Path(__file__).resolve().parents[1] / "packages"
        names = ("tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder")
        sys.path[:0] = [str(packages / name / "src") for name in names]


_checkout_on_path()

from candidates import CANDIDATES, DEFAULT_COMPILED, DEFAULT_GENERATE, DEFAULT_TRAIN, SHAPES  # noqa: E402
from measure import Peak, verify_compile  # noqa: E402
from report import machine_line, report  # noqa: E402
from rounds import Clock, GenRow, Settings, run_generation, run_training  # noqa: E402


def _names(text: str, what: str) -> list[str]:
    if text.strip() in ("", "none"):
        return []
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown:
        raise SystemExit(
            f"bench.py: error: {what}: unknown candidate(s) {unknown}; "
            f"expected some of {list(CANDIDATES)} or 'none'"
        )
    return names


# argparse destination: (--quick default, normal default).
RUN_DEFAULTS = {
    "warmup": (1, 2),
    "repeats": (2, 5),
    "steps_per_repeat": (1, 3),
    "gen_new": (32, 256),
    "gen_repeats": (1, 3),
    "peak_size": (1024, 2048),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--shape", choices=list(SHAPES), default=None, help="default: cpu on CPU, gpt2-8l on CUDA"
    )
    parser.add_argument("--repeats", type=int, help="alternating rounds (default 5)")
    parser.add_argument(
        "--steps-per-repeat",
        type=int,
        help="steps timed together per candidate and round (default 3)",
    )
    parser.add_argument("--warmup", type=int, help="untimed steps per candidate (default 2)")
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated training candidates (eager rows), or 'none'; "
        f"default on CPU {','.join(DEFAULT_TRAIN['cpu'])}, on CUDA "
        f"{','.join(DEFAULT_TRAIN['cuda'])}; all: {','.join(CANDIDATES)}",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile rows (see --compile-only)"
    )
    parser.add_argument(
        "--compile-only",
        default=",".join(DEFAULT_COMPILED),
        help="candidates compiled with --compile, in this order",
    )
    parser.add_argument(
        "--gen-only",
        default=",".join(DEFAULT_GENERATE),
        help="candidates timed in generation, or 'none'",
    )
    parser.add_argument("--gen-new", type=int, help="new tokens per generation (default 256)")
    parser.add_argument("--gen-repeats", type=int, help="alternating generation runs (default 3)")
    parser.add_argument(
        "--gen-batch", type=int, default=1, help="prompts generated at once (default 1)"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument(
        "--peak-size",
        type=int,
        help="CPU: size of the square fp32 matmul that measures the peak (default 2048)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop adding compiled rows, rounds and generation runs once "
        "this many seconds have passed (default: 420 on CUDA, none on CPU)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 warm-up step, 2 rounds of 1 step, 32 new tokens, 1 generation "
        "run, a 1024 matmul (flags given explicitly still win)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for bench.md and bench.json (default runs/bench/<device>-<shape>)",
    )
    parser.add_argument(
        "--verify-compile",
        action="store_true",
        help="only verify that tfs's training forward compiles with "
        "fullgraph=True (graph breaks, eager match); exit 1 if not",
    )
    parser.add_argument(
        "--compile-backend",
        default="aot_eager",
        help="torch.compile backend for --verify-compile (inductor needs a C++ compiler on CPU)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.verify_compile:
        failures = verify_compile(args.compile_backend, lambda m: print(m, flush=True))
        print("compile check: " + ("ok" if failures == 0 else f"{failures} failure(s)"))
        return 1 if failures else 0

    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench.py: error: --device cuda: CUDA is not available")
        torch.set_float32_matmul_precision("high")
    dtype = {"fp32": None, "bf16": torch.bfloat16}.get(args.dtype)
    if args.dtype == "auto" and device.type == "cuda":
        dtype = torch.bfloat16
    shape_name = args.shape or ("gpt2-8l" if device.type == "cuda" else "cpu")
    # Flags left out take the --quick or the normal default.
    for name, (quick, normal) in RUN_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    # Every compiled row compiles LossModule.forward once; keep them all in the cache.
    for limit in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, limit):
            setattr(torch._dynamo.config, limit, 256)
    settings = Settings(
        device=device,
        dtype=dtype,
        shape_name=shape_name,
        shape=SHAPES[shape_name],
        train=_names(args.only or ",".join(DEFAULT_TRAIN[device.type]), "--only"),
        compiled=_names(args.compile_only, "--compile-only") if args.compile else [],
        generate=_names(args.gen_only, "--gen-only"),
        repeats=args.repeats,
        steps=args.steps_per_repeat,
        warmup=max(args.warmup, 1),
        gen_new=args.gen_new,
        gen_batch=args.gen_batch,
        gen_repeats=args.gen_repeats,
        peak_size=args.peak_size,
        budget_s=args.budget_s
        if args.budget_s is not None
        else (420.0 if device.type == "cuda" else None),
        gen_reserve_s=90.0,
        out=args.out or Path("runs/bench") / f"{device.type}-{shape_name}",
    )
    clock = Clock(settings.budget_s)
    log(machine_line(device))
    log(f"shape {shape_name}: {settings.shape.describe()}")
    load_start = os.getloadavg()[0]
    peak = Peak(device, settings.peak_size) if settings.train or settings.compiled else None
    rows = run_training(settings, clock, peak, log) if peak else []
    if peak:
        log(f"peak: {peak.describe()}")
    gen_rows: list[GenRow] = []
    if settings.generate and clock.left() > 0:
        gen_rows = run_generation(settings, clock, log)
    elif settings.generate:
        log("generation skipped: time budget spent")
    load = (load_start, os.getloadavg()[0])
    markdown, data = report(settings, rows, gen_rows, peak, clock.elapsed(), load)
    print(markdown)
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "bench.md").write_text(markdown)
    (settings.out / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    log(f"wrote {settings.out / 'bench.md'} and {settings.out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
