"""Benchmark (not a test): nanoGPT's CPU recipe for Shakespeare characters, trained with tfs.

nanoGPT's README gives this recipe for a CPU (4 layers, 4 heads, d_model 128, context 64,
batch 12, 2000 iterations, learning rate 1e-3 decaying to 1e-4 after 100 warmup steps, no
dropout) and reports a validation loss of about 1.88 on the 1,115,394-character
tinyshakespeare text split 90/10. This script trains the same shapes with ``tfs train``'s
library and prints the validation loss and the wall time.

    python benchmarks/shakespeare_char.py [--data PATH] [--out DIR]

The text defaults to ``../shared/data/tinyshakespeare.txt`` beside the repository.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tfs_decoder.training import TrainConfig, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("runs/shakespeare-char"))
    args = parser.parse_args()
    config = TrainConfig(
        data=str(args.data),
        out=str(args.out),
        tokenizer="char",
        n_layers=4,
        n_heads=4,
        d_model=128,
        d_mlp=4 * 128,
        n_ctx=64,
        batch_size=12,
        max_steps=2000,
        lr=1e-3,
        min_lr=1e-4,
        warmup_steps=100,
        dropout=0.0,
        weight_decay=0.1,
        val_fraction=0.1,
        eval_interval=250,
        eval_steps=40,  # nanoGPT's eval_iters=20 on each of its two splits: the same work
        checkpoint_interval=0,
        checkpoint_minutes=0.0,
        sample_tokens=300,
    )
    started = time.perf_counter()
    result = train(config, progress=True)
    wall = time.perf_counter() - started
    print(
        f"shakespeare-char: val loss {result.val_loss:.4f} nats/char after {result.step} steps, "
        f"wall {wall:.0f} s, {result.tokens_per_s:,.0f} tokens/s (nanoGPT reports about 1.88)"
    )


if __name__ == "__main__":
    main()
