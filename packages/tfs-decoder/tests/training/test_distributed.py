"""Data-parallel training: the environment torchrun sets, and a real 2-process CPU run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tfs_decoder.training.distributed import DistInfo, backend_for, distributed, env_dist_info
from tfs_decoder.training.errors import TfsError


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = env_dist_info()
    assert info == DistInfo(rank=0, local_rank=0, world_size=1)
    assert not info.enabled
    assert info.is_main
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert env_dist_info() == DistInfo()


def test_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_dist_info()
    assert info == DistInfo(rank=3, local_rank=1, world_size=4)
    assert info.enabled
    assert not info.is_main


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"WORLD_SIZE": "two"}, r"environment variable WORLD_SIZE: expected an int, got 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, r"RANK: expected < WORLD_SIZE=2, got 2"),
        ({"WORLD_SIZE": "2", "RANK": "-1"}, r"RANK: expected an int >= 0, got -1"),
    ],
)
def test_rejects_bad_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], match: str
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TfsError, match=match):
        env_dist_info()


def test_backends() -> None:
    assert backend_for("cpu") == "gloo"
    assert backend_for("cuda") == "nccl"
    with pytest.raises(TfsError, match=r"--device: distributed training .* got 'mps'"):
        backend_for("mps")


def test_one_process_needs_no_process_group() -> None:
    with distributed(DistInfo(), torch.device("cpu")) as info:
        assert info == DistInfo()
        assert not torch.distributed.is_initialized()


# The script torchrun starts in each process: records each rank's windows (through the
# sampler train() builds) and final weights, then runs the real `tfs train` command line.
SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import tfs_decoder.training.data as data_module
    import tfs_decoder.training.state as state_module
    from tfs_decoder.training.batches import WindowSampler
    from tfs_decoder.training.cli import main

    record_dir = sys.argv[1]
    rank = int(os.environ["RANK"])
    models = []

    class RecordingSampler(WindowSampler):
        def batch(self, step):
            with open(os.path.join(record_dir, f"windows-{self.rank}.jsonl"), "a") as f:
                starts = self.batch_starts(step).tolist()
                f.write(json.dumps({"step": step, "world_size": self.world_size,
                                    "starts": starts}) + "\\n")
            return super().batch(step)

    build_optimizer = state_module.build_optimizer

    def recording_build_optimizer(model, *args, **kwargs):
        models.append(model)
        return build_optimizer(model, *args, **kwargs)

    data_module.WindowSampler = RecordingSampler
    state_module.build_optimizer = recording_build_optimizer
    status = main(sys.argv[2:])
    flat = torch.cat([p.detach().flatten() for p in models[0].parameters()])
    with open(os.path.join(record_dir, f"final-{rank}.json"), "w") as f:
        json.dump({"status": status, "weights": flat.tolist(),
                   "group_left": not torch.distributed.is_initialized()}, f)
    sys.exit(status)
    """
)


def torchrun(tmp_path: Path, flags: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run SCRIPT under torchrun --nproc_per_node=2 on CPU (gloo) with `tfs train` and the
    model flags of a tiny run plus ``flags``; returns the process and the records folder."""
    data = tmp_path / "corpus.txt"
    data.write_text(" ".join(["the cat sat on the mat", "a dog ran"] * 300), encoding="utf-8")
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    records = tmp_path / "records"
    records.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = "1"
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # torchrun must not try CUDA on a GPU machine either: --device cpu.
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        str(script), str(records),
        "train", "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
        "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32",
        "--n-ctx", "16", "--batch-size", "4", "--grad-accum", "2", *flags,
    ]  # fmt: skip
    completed = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed, records


def test_two_process_ddp_run(tmp_path: Path) -> None:
    """torchrun --nproc_per_node=2 on CPU (gloo): both ranks finish with identical weights,
    read disjoint windows at every step, only rank 0 writes the run directory, and the
    loss is finite and falls. With a time budget (its probe's steps, a deadline) and a
    checkpoint due after every step by rank 0's clock, the ranks take part in the same
    collectives and save at every step."""
    completed, records = torchrun(tmp_path, [
        "--max-steps", "16", "--warmup-steps", "2", "--lr", "0.01", "--min-lr", "0.001",
        "--eval-interval", "8", "--eval-steps", "2", "--log-interval", "4",
        "--checkpoint-interval", "8", "--sample-tokens", "5", "--sample-prompt", "the ",
        "--seed", "1", "--time-budget", "5", "--checkpoint-minutes", "1e-9",
    ])  # fmt: skip
    out = tmp_path / "run"

    # Only rank 0 wrote the run directory, and it wrote everything.
    names = sorted(p.name for p in out.iterdir())
    assert names == ["ckpt-0000015", "ckpt-0000016", "latest", "loss.png", "metrics.jsonl",
                     "sample.txt"]  # fmt: skip
    saved = json.loads((out / "ckpt-0000016" / "config.json").read_text())["train"]
    assert (saved["max_steps"], saved["time_budget"]) == (16, 5.0)
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    metrics = [json.loads(line) for line in lines]
    assert [m["step"] for m in metrics] == [4, 8, 12, 16]
    assert all(m["world_size"] == 2 for m in metrics)
    losses = [m["train_loss"] for m in metrics]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    assert metrics[-1]["val_loss"] < metrics[1]["val_loss"]
    assert (out / "sample.txt").read_text(encoding="utf-8").startswith("the ")
    assert completed.stdout.count("--- sample") == 1  # printed by rank 0 only

    finals = [json.loads((records / f"final-{r}.json").read_text()) for r in (0, 1)]
    assert [f["status"] for f in finals] == [0, 0]
    assert all(f["group_left"] for f in finals)  # the process group was destroyed
    assert finals[0]["weights"] == finals[1]["weights"]  # DDP kept the replicas equal

    windows = [
        [json.loads(line) for line in (records / f"windows-{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    # The probe's 5 steps, then 16 steps x 2 micro-batches per rank, each rank told
    # world_size 2.
    assert [w["step"] for w in windows[0]] == list(range(10)) + list(range(32))
    assert [w["step"] for w in windows[1]] == list(range(10)) + list(range(32))
    windows = [rank[10:] for rank in windows]
    assert all(w["world_size"] == 2 for rank in windows for w in rank)
    for w0, w1 in zip(windows[0], windows[1], strict=True):
        assert not set(w0["starts"]) & set(w1["starts"])  # disjoint windows at every step
