"""Same seed, same run: real ``python -m tfs_decoder train`` processes at torch's default
intra-op thread count (the tests' conftest pins one thread in this process only; the
children get no ``OMP_NUM_THREADS``), as a user runs them.

Run A trains straight through. Run B has the same flags, is killed with SIGKILL after its
first checkpoint, and is resumed. Every metric B logged before the kill equals A's (two
processes, same flags, same numbers), and the resumed B ends with A's weights, optimizer
state, metrics and sample, bit for bit.

The model is large enough for torch to split its ops across threads (the token
embedding's gradient is 1,024 token rows of width 64; indexing's backward, which tfs no
longer uses, summed repeated ids in thread order and made two such runs differ by 2e-4
after 40 steps).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tfs_decoder.training.load import load_checkpoint

FLAGS = [
    "--d-model", "64", "--n-layers", "2", "--n-heads", "2", "--d-mlp", "128",
    "--n-ctx", "32", "--batch-size", "32", "--max-steps", "20", "--warmup-steps", "2",
    "--eval-interval", "10", "--eval-steps", "2", "--log-interval", "1",
    "--checkpoint-interval", "5", "--sample-tokens", "20", "--device", "cpu", "--seed", "7",
]  # fmt: skip
TIMED = ("tokens_per_s", "elapsed_s")  # wall-clock readings, different in every run


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else the child recompiles torch (~10 s)
    return env


def _train(data: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfs_decoder",
            "train",
            *FLAGS,
            "--data",
            str(data),
            "--out",
            str(out),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]


def _metrics(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMED} for line in lines]


def _kill_after_first_checkpoint(proc: subprocess.Popen[str], out: Path) -> int:
    """SIGKILL ``proc`` as soon as ``out/latest`` names a checkpoint; returns its step."""
    latest = out / "latest"
    deadline = time.monotonic() + 240
    try:
        while not (latest.exists() and latest.read_text(encoding="utf-8").strip()):
            assert proc.poll() is None, (
                f"run B ended before its first checkpoint: {proc.communicate()}"
            )
            assert time.monotonic() < deadline, "no checkpoint in 240 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "run B finished before it could be killed"
    return int(latest.read_text(encoding="utf-8").strip().removeprefix("ckpt-"))


def test_same_flags_give_the_same_run_and_a_killed_run_resumes_exactly(tmp_path: Path) -> None:
    words = ("the", "cat", "sat", "on", "a", "mat", "and", "saw", "one", "big", "red", "dog")
    rng = random.Random(0)
    data = tmp_path / "corpus.txt"
    data.write_text(" ".join(rng.choice(words) for _ in range(1500)) + ".\n", encoding="utf-8")
    straight, killed = tmp_path / "a", tmp_path / "b"

    _finish(_train(data, straight))
    step = _kill_after_first_checkpoint(_train(data, killed), killed)
    before_kill = _metrics(killed)
    assert len(before_kill) >= step  # log interval 1: a line per finished step
    assert before_kill == _metrics(straight)[: len(before_kill)]
    _finish(_train(data, killed, "--resume"))

    assert _metrics(killed) == _metrics(straight)
    assert (killed / "sample.txt").read_text() == (straight / "sample.txt").read_text()
    a, b = load_checkpoint(straight), load_checkpoint(killed)
    assert a.step == b.step == 20
    assert a.model_state.keys() == b.model_state.keys()
    for name, tensor in a.model_state.items():
        assert torch.equal(tensor, b.model_state[name]), name
    for name, tensor in a.state["optimizer"]["state"].items():
        for key, value in tensor.items():
            assert torch.equal(value, b.state["optimizer"]["state"][name][key]), (name, key)
