"""Benchmark (not a test): generation speed with and without the key/value cache.

Times ``Decoder.generate`` for 256 new tokens after a 16-token prompt, batch 1, greedy, on
an untrained model of the default ``tfs train`` widths (8 layers, d_model 128, 4 heads,
d_mlp 512, 100-token vocabulary) with n_ctx 512 so that every new token fits. Without the
cache each step runs the whole sequence so far; with it, one position. The two runs
alternate ``--repeats`` times and the medians are printed, with a check that both gave the
same tokens.

    python benchmarks/generate_cache.py [--repeats 3] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tfs_decoder import Decoder, DecoderConfig

CONFIG = DecoderConfig(d_vocab=100, d_model=128, n_heads=4, d_mlp=512, n_layers=8, n_ctx=512)
PROMPT, NEW = 16, 256


def time_generate(
    model: Decoder, prompt: torch.Tensor, use_cache: bool
) -> tuple[float, torch.Tensor]:
    """Seconds for one generate call of NEW tokens, and the tokens it produced."""
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(prompt, NEW, temperature=0.0, use_cache=use_cache)
    if prompt.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Decoder(CONFIG).to(args.device).eval()
    prompt = torch.randint(0, CONFIG.d_vocab, (1, PROMPT), device=args.device)
    time_generate(model, prompt[:, :4], True)  # warm-up: allocator, kernels
    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, torch.Tensor] = {}
    for _ in range(args.repeats):
        for use_cache in (False, True):
            elapsed, outputs[use_cache] = time_generate(model, prompt, use_cache)
            seconds[use_cache].append(elapsed)
    same = torch.equal(outputs[True], outputs[False])
    print(
        f"{NEW} new tokens after a {PROMPT}-token prompt, batch 1, greedy, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    for use_cache in (False, True):
        median = statistics.median(seconds[use_cache])
        label = "with cache   " if use_cache else "without cache"
        print(f"  {label}  {median:6.2f} s  {NEW / median:8.1f} tokens/s")
    speedup = statistics.median(seconds[False]) / statistics.median(seconds[True])
    print(f"  speed-up {speedup:.1f}x; identical tokens: {same}")


if __name__ == "__main__":
    main()
