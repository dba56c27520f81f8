"""The ``tfs`` command line: flags -> TrainConfig, train/sample/eval/attention-plot end to
end on a tiny corpus, and every bad input ending as one ``tfs: error:`` line with no
traceback.

Commands run in-process through ``main([...])`` (fast); two run as real subprocesses
(``python -m tfs_decoder``) to check what a user's terminal gets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

import tfs_decoder.training.commands
import tfs_decoder.training.trainer
from tfs_decoder import Decoder, DecoderConfig
from tfs_decoder.training.attention_plot import attention_patterns, plot_attention
from tfs_decoder.training.checkpoint import save_checkpoint
from tfs_decoder.training.cli import build_parser, main
from tfs_decoder.training.errors import TfsError
from tfs_decoder.training.flags import train_config_from_args
from tfs_decoder.training.load import load_checkpoint, load_model
from tfs_decoder.training.presets import DEFAULT_PRESET, PRESETS, preset_config
from tfs_decoder.training.tokenizer import CharTokenizer, WordTokenizer
from tfs_decoder.training.trainer import TrainConfig

# The smallest model and run the CLI accepts that still exercises every part of train().
TINY = [
    "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--n-ctx", "16",
    "--batch-size", "4", "--max-steps", "4", "--warmup-steps", "1", "--eval-interval", "2",
    "--eval-steps", "2", "--log-interval", "1", "--sample-tokens", "20", "--device", "cpu",
]  # fmt: skip
SENTENCE = "the cat sat on a mat and saw one big red dog run to its home by the sea"
WORDS = SENTENCE.split(" ")


def write_corpus(path: Path, n_words: int = 600, seed: int = 0) -> Path:
    """A few kilobytes of lowercase words and full stops (28 distinct characters)."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n_words // 6):
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(6)) + ".")
    path.write_text(" ".join(sentences) + "\n", encoding="utf-8")
    return path


@dataclasses.dataclass
class Run:
    """A finished tiny run: its data file and run directory."""

    data: Path
    out: Path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``main(argv)`` in-process; returns (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status: int, err: str, *patterns: str) -> None:
    """A user error: non-zero status, exactly one stderr line ``tfs: error: ...`` matching
    every pattern, and no traceback."""
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tfs: error: "), err
    for pattern in patterns:
        assert re.search(pattern, lines[0]), (pattern, lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One tiny run (4 steps) shared read-only by the tests below; tests that change it
    work on a copy (:func:`run_copy`)."""
    root = tmp_path_factory.mktemp("trained")
    data = write_corpus(root / "corpus.txt")
    out = root / "run"
    status = main(["train", *TINY, "--data", str(data), "--out", str(out)])
    assert status == 0
    return Run(data, out)


@pytest.fixture
def run_copy(trained: Run, tmp_path: Path) -> Run:
    out = tmp_path / "run"
    shutil.copytree(trained.out, out)
    return Run(trained.data, out)


# ---------------------------------------------------------------------------------------
# Flags and presets


def train_dests() -> set[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = subparsers.choices["train"]
    return {a.dest for a in train._actions if a.dest not in ("help", "preset")}


def test_every_train_config_field_has_a_flag_and_back() -> None:
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert train_dests() == fields


def test_issue_flags_are_spelled_as_documented(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "train", "--help")
    assert status == 0
    flags = [
        "--data", "--preset", "--d-model", "--n-layers", "--n-heads", "--d-mlp", "--n-ctx",
        "--batch-size", "--grad-accum", "--lr", "--min-lr", "--warmup-steps", "--max-steps",
        "--weight-decay", "--dropout", "--eval-interval", "--eval-steps", "--seed",
        "--tokenizer", "--out", "--resume", "--device", "--dtype", "--compile",
        "--time-budget", "--checkpoint-minutes", "--checkpoint-interval",
    ]  # fmt: skip
    for flag in flags:
        assert re.search(rf"{flag}\b", out), flag
    for command in ("sample", "eval"):
        status, out, _ = run_cli(capsys, command, "--help")
        assert status == 0
        assert "--checkpoint" in out
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0
    assert all(command in out for command in ("train", "sample", "eval"))


def test_flags_override_the_preset_and_nothing_else() -> None:
    config = train_config_from_args({"preset": "smoke", "d_model": 48, "lr": 1e-3})
    smoke = preset_config("smoke")
    assert (config.d_model, config.lr) == (48, 1e-3)
    assert dataclasses.replace(config, d_model=smoke.d_model, lr=smoke.lr) == smoke
    assert train_config_from_args({}) == preset_config(DEFAULT_PRESET)


def test_presets_are_valid_and_gpt2_8l_has_gpt2_small_widths() -> None:
    assert {"cpu", "gpt2-8l", "smoke"} <= set(PRESETS)
    for name in PRESETS:
        preset_config(name).validate()
    gpt2 = preset_config("gpt2-8l")
    assert (gpt2.d_model, gpt2.n_heads, gpt2.d_mlp, gpt2.n_layers, gpt2.n_ctx) == (
        768, 12, 3072, 8, 1024,
    )  # fmt: skip
    assert gpt2.tokenizer == "bpe"
    assert gpt2.grad_accum > 1
    smoke, cpu = preset_config("smoke"), preset_config("cpu")
    assert cpu.max_steps is None
    assert cpu.budget_seconds() == 600
    assert gpt2.budget_seconds() is None
    assert smoke.budget_seconds() is None
    assert smoke.max_steps is not None
    assert smoke.d_model < cpu.d_model


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(TfsError, match=r"unknown preset 'gpt5'.*cpu, gpt2-8l, smoke"):
        preset_config("gpt5")


def test_prompt_escapes() -> None:
    config = train_config_from_args({"sample_prompt": "a"})
    assert config.sample_prompt == "a"
    parser = build_parser()
    args = parser.parse_args(["train", "--sample-prompt", r"x\ny\t\\n"])
    assert args.sample_prompt == "x\ny\t\\n"


# ---------------------------------------------------------------------------------------
# End to end


def read_metrics(out: Path) -> list[dict[str, float]]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_train_writes_checkpoint_metrics_png_and_sample(trained: Run) -> None:
    out = trained.out
    latest = (out / "latest").read_text(encoding="utf-8").strip()
    assert latest == "ckpt-0000004"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "state.pt"):
        assert (out / latest / name).is_file(), name
    saved = json.loads((out / latest / "config.json").read_text(encoding="utf-8"))
    assert saved["model"]["d_model"] == 16
    assert saved["train"]["data"] == str(trained.data)
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["val_loss"] is not None
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sample = (out / "sample.txt").read_text(encoding="utf-8")
    assert len(sample) > 10


def test_train_prints_summary_and_sample(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    status, stdout, stderr = run_cli(
        capsys, "train", *TINY, "--max-steps", "2", "--data", data, "--out", out
    )
    assert status == 0
    assert re.search(r"val loss \d+\.\d+ nats/token, \d+\.\d+ bits/char", stderr)
    assert (out / "sample.txt").read_text(encoding="utf-8") in stdout


def test_resume_continues_from_the_checkpoint_with_its_settings(
    trained: Run, run_copy: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    # Settings not given come from the checkpoint, unless --preset names a starting point;
    # --out is where the run is now, not where the checkpoint was written.
    resumed = train_config_from_args({"resume": True, "out": str(run_copy.out)})
    assert (resumed.d_model, resumed.data, resumed.out) == (
        16,
        str(trained.data),
        str(run_copy.out),
    )
    with_preset = train_config_from_args(
        {"resume": True, "out": str(run_copy.out), "preset": "smoke"}
    )
    assert with_preset == dataclasses.replace(
        preset_config("smoke"), resume=True, out=str(run_copy.out)
    )
    # Only --out and a later --max-steps: the model sizes and --data come from the checkpoint.
    status, _, err = run_cli(capsys, "train", "--resume", "--out", run_copy.out, "--max-steps", "6")
    assert status == 0, err
    assert "resuming at step 4" in err
    assert (run_copy.out / "latest").read_text(encoding="utf-8").strip() == "ckpt-0000006"
    assert [r["step"] for r in read_metrics(run_copy.out)] == [1, 2, 3, 4, 5, 6]
    assert (trained.out / "latest").read_text(encoding="utf-8").strip() == "ckpt-0000004"


def test_sample_prints_the_prompt_and_a_seeded_continuation(
    trained: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--checkpoint", str(trained.out), "--prompt", "the cat", "--max-new-tokens",
            "30", "--temperature", "1.0", "--top-k", "10", "--top-p", "0.95", "--seed", "3",
            "--device", "cpu"]  # fmt: skip
    status, first, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert first.endswith("\n")
    text = first[:-1]
    assert text.startswith("the cat")
    assert len(text) == len("the cat") + 30  # char tokenizer: one token per character
    assert set(text) <= set(SENTENCE + ".\n")
    status, second, _ = run_cli(capsys, *argv)
    assert (status, second) == (0, first)


def test_eval_prints_nats_per_token_and_bits_per_char(
    trained: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_cli(capsys, "eval", "--checkpoint", trained.out, "--device", "cpu")
    assert status == 0, err
    match = re.search(r"val loss (\d+\.\d+) nats/token, (\d+\.\d+) bits/char", out)
    assert match is not None, out
    nats, bits = float(match.group(1)), float(match.group(2))
    # The same validation windows as training's last evaluation: the same loss.
    assert nats == pytest.approx(read_metrics(trained.out)[-1]["val_loss"], abs=1e-4)
    assert bits == pytest.approx(nats / math.log(2), abs=1e-3)  # one char per token

    status, out, err = run_cli(
        capsys, "eval", "--checkpoint", trained.out, "--data", trained.data, "--eval-steps", "3"
    )
    assert status == 0, err
    match = re.search(r"val loss (\d+\.\d+) nats/token, (\d+\.\d+) bits/char", out)
    assert match is not None, out
    assert 0 < float(match.group(1)) < math.log(28) + 1
    assert "12 windows" in out  # 3 batches of the run's --batch-size 4


# ---------------------------------------------------------------------------------------
# --tokenizer word: trained, then used by sample, eval, attention-plot and --resume from
# the checkpoint alone


@pytest.fixture(scope="module")
def word_trained(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A 2-step run with ``--tokenizer word`` capped at 8 tokens: ' ', '. ', the 5 most
    frequent words and <unk> for the other 13 words and the last full stop."""
    root = tmp_path_factory.mktemp("word")
    data = write_corpus(root / "corpus.txt")
    out = root / "run"
    argv = ["train", *TINY, "--max-steps", "2", "--tokenizer", "word", "--word-vocab-size", "8"]
    assert main([*argv, "--data", str(data), "--out", str(out)]) == 0
    return Run(data, out)


def test_word_tokenizer_is_saved_and_used_by_sample_eval_and_plot(
    word_trained: Run,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = word_trained.out
    saved = json.loads((out / "ckpt-0000002" / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer = WordTokenizer.fit(word_trained.data.read_text(encoding="utf-8"), vocab_size=8)
    assert saved == {"kind": "word", "pieces": tokenizer.pieces}
    assert saved["pieces"][:2] == [" ", ". "]
    unknown = next(w for w in WORDS if w not in saved["pieces"])

    # A prompt piece outside the vocabulary is <unk>, not an error; the prompt is kept as given.
    prompt = f"the {unknown}"
    argv: list[str | Path] = ["sample", "--checkpoint", out, "--prompt", prompt,
                              "--max-new-tokens", "10", "--seed", "0"]  # fmt: skip
    status, text, err = run_cli(capsys, *argv, "--device", "cpu")
    assert status == 0, err
    assert text.startswith(prompt)
    assert set(text[len(prompt) :].replace("<unk>", "")) <= set(SENTENCE + "\n")

    status, stdout, err = run_cli(capsys, "eval", "--checkpoint", out, "--device", "cpu")
    assert status == 0, err
    match = re.search(r"val loss (\d+\.\d+) nats/token", stdout)
    assert match is not None, stdout
    assert float(match.group(1)) == pytest.approx(read_metrics(out)[-1]["val_loss"], abs=1e-4)
    # Bits per character of the text itself, not of its decoding with <unk> in it.
    text = word_trained.data.read_text(encoding="utf-8")
    status, stdout, err = run_cli(capsys, "eval", "--checkpoint", out, "--data", word_trained.data)
    assert status == 0, err
    match = re.search(r"(\d+\.\d+) nats/token, (\d+\.\d+) bits/char .*: ([\d,]+) tokens", stdout)
    assert match is not None, stdout
    nats, bits, n_tokens = float(match[1]), float(match[2]), int(match[3].replace(",", ""))
    assert n_tokens == len(tokenizer.encode(text))
    assert bits == pytest.approx(nats * n_tokens / len(text) / math.log(2), abs=1e-3)

    drawn: list[list[str]] = []

    def recording_plot(
        patterns: Tensor, labels: Sequence[str], path: str | Path, *, title: str
    ) -> Path:
        drawn.append(list(labels))
        return Path(path)

    monkeypatch.setattr(tfs_decoder.training.commands, "plot_attention", recording_plot)
    status, _, err = run_cli(capsys, "attention-plot", "--checkpoint", out, "--prompt", prompt,
                             "--out", tmp_path / "a.png", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    assert drawn == [[tokenizer.decode([i]) for i in tokenizer.encode(prompt)]]
    assert drawn[0][-2:] == [" ", "<unk>"]


def test_word_tokenizer_resumes_with_the_saved_vocabulary(
    word_trained: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(word_trained.out, out)
    # A different cap on resume does not refit: the checkpoint's vocabulary is the model's.
    argv: list[str | Path] = ["train", "--resume", "--out", out, "--max-steps", "3",
                              "--word-vocab-size", "20"]  # fmt: skip
    status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    assert "resuming at step 2" in err
    before = (word_trained.out / "ckpt-0000002" / "tokenizer.json").read_text(encoding="utf-8")
    assert (out / "ckpt-0000003" / "tokenizer.json").read_text(encoding="utf-8") == before


# ---------------------------------------------------------------------------------------
# Bad input: one line, no traceback


def _bad_data(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.txt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "short":
        path.write_text("too short for n_ctx 16\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", r"--data: no such file"),
        ("empty", r"empty"),
        ("binary", r"binary|UTF-8|NUL"),
        ("short", r"too short"),
    ],
)
def test_bad_data_is_one_line(
    kind: str, pattern: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _bad_data(kind, tmp_path)
    status, _, err = run_cli(capsys, "train", *TINY, "--data", data, "--out", tmp_path / "run")
    assert_one_error_line(status, err, pattern)
    assert not (tmp_path / "run" / "latest").exists()


@pytest.mark.parametrize(
    ("argv", "patterns"),
    [
        (["train", "--preset", "gpt5"], [r"unknown preset 'gpt5'", r"cpu, gpt2-8l, smoke"]),
        (["train", "--d-model", "wide"], [r"--d-model", r"invalid int value: 'wide'"]),
        (["train", "--lr", "-1"], [r"--lr: expected a number"]),
        (["train", "--n-heads", "3"], [r"--n-heads: expected a divisor of --d-model=128"]),
        (["train", "--tokenizer", "words"], [r"--tokenizer", r"invalid choice"]),
        (["train", "--word-vocab-size", "1"], [r"--word-vocab-size: expected an int >= 2, got 1"]),
        (["train", "--dtype", "fp8"], [r"--dtype", r"invalid choice"]),
        (["train", "--no-such-flag"], [r"unrecognized arguments: --no-such-flag"]),
        (["sample"], [r"--checkpoint"]),
        (["sample", "--checkpoint", "x", "--temperature", "-1"], [r"--temperature"]),
        (["sample", "--checkpoint", "x", "--top-p", "0"], [r"--top-p"]),
        (["fly"], [r"invalid choice: 'fly'"]),
        ([], [r"expected a command"]),
    ],
)
def test_bad_flags_are_one_line(
    argv: list[str], patterns: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, *argv)
    assert_one_error_line(status, err, *patterns)


def test_resume_without_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_corpus(tmp_path / "corpus.txt")
    status, _, err = run_cli(
        capsys, "train", *TINY, "--data", data, "--out", tmp_path / "run", "--resume"
    )
    assert_one_error_line(status, err, r"no checkpoint|does not exist")


@pytest.mark.parametrize(
    "name", ["model.safetensors", "config.json", "tokenizer.json", "state.pt", "latest"]
)
def test_resume_from_a_truncated_checkpoint(
    name: str, run_copy: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    path = run_copy.out / name if name == "latest" else run_copy.out / "ckpt-0000004" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    status, _, err = run_cli(capsys, "train", "--resume", "--out", run_copy.out)
    assert_one_error_line(status, err, r"checkpoint: ", re.escape(name))
    for command in ("sample", "eval"):
        status, _, err = run_cli(capsys, command, "--checkpoint", run_copy.out)
        assert_one_error_line(status, err, r"checkpoint: ", re.escape(name))


def test_resume_with_different_sizes_lists_the_differences(
    run_copy: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(
        capsys, "train", *TINY, "--data", run_copy.data, "--out", run_copy.out, "--resume",
        "--d-model", "32", "--n-layers", "2",
    )  # fmt: skip
    assert_one_error_line(
        status, err, r"does not match", r"d_model: checkpoint has 16, flags ask for 32",
        r"n_layers: checkpoint has 1, flags ask for 2",
    )  # fmt: skip


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("sample", "eval"):
        status, _, err = run_cli(capsys, command, "--checkpoint", tmp_path / "nope")
        assert_one_error_line(status, err, r"does not exist")


def test_text_the_tokenizer_cannot_encode(
    trained: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "sample", "--checkpoint", trained.out, "--prompt", "CAT")
    assert_one_error_line(status, err, r"--prompt", r"'C'")
    other = tmp_path / "other.txt"
    other.write_text("UPPER CASE TEXT " * 20, encoding="utf-8")
    status, _, err = run_cli(capsys, "eval", "--checkpoint", trained.out, "--data", other)
    assert_one_error_line(status, err, r"--data")


def _raise(error: BaseException) -> Callable[..., object]:
    def fake_train(*args: object, **kwargs: object) -> object:
        raise error

    return fake_train


def test_interrupt_and_out_of_memory_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tfs_decoder.training.trainer, "train", _raise(KeyboardInterrupt()))
    status, _, err = run_cli(capsys, "train")
    assert (status, err) == (130, "tfs: interrupted\n")
    saved = tfs_decoder.training.trainer.TrainingInterrupted(37, Path("runs/x/ckpt-0000037"))
    monkeypatch.setattr(tfs_decoder.training.trainer, "train", _raise(saved))
    status, _, err = run_cli(capsys, "train")
    assert (status, err) == (
        130,
        "tfs: interrupted at step 37; saved runs/x/ckpt-0000037 (resume with --resume)\n",
    )
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    monkeypatch.setattr(tfs_decoder.training.trainer, "train", _raise(oom))
    status, _, err = run_cli(capsys, "train")
    assert_one_error_line(status, err, r"out of memory", r"--batch-size")


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tfs_decoder.training.trainer, "train", _raise(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train"])


# ---------------------------------------------------------------------------------------
# Real processes


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_module_entry_point_errors_without_traceback(
    tmp_path: Path, trained: Run, subprocess_env: dict[str, str]
) -> None:
    """What a terminal shows: ``python -m tfs_decoder`` is the ``tfs`` command."""
    broken = tmp_path / "run"
    shutil.copytree(trained.out, broken)
    weights = broken / "ckpt-0000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cases = [
        (["train", "--data", str(tmp_path / "missing.txt")], r"--data: no such file"),
        (["sample", "--checkpoint", str(broken)], r"truncated or corrupt"),
    ]
    for argv, pattern in cases:
        done = subprocess.run(
            [sys.executable, "-m", "tfs_decoder", *argv],
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=120,
        )
        assert_one_error_line(done.returncode, done.stderr, pattern)
        assert done.stdout == ""


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(
    tmp_path: Path, subprocess_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ``python -m tfs_decoder train`` gets SIGINT after a few logged steps: exit
    status 130, one stderr line naming the checkpoint of the last completed step, no
    traceback; that checkpoint loads and ``--resume`` continues from it."""
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    argv = [*TINY, "--max-steps", "100000", "--eval-interval", "100000"]
    argv += ["--checkpoint-interval", "0", "--data", str(data), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfs_decoder", "train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env,
        # A shell's background job starts with SIGINT ignored; give the child the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no training steps logged in 60 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if "interrupted" in line or "saved" in line]
    assert len(lines) == 1, stderr
    match = re.fullmatch(
        r"tfs: interrupted at step (\d+); saved (.+) \(resume with --resume\)", lines[0]
    )
    assert match is not None, lines[0]
    step = int(match.group(1))
    assert step >= 3
    assert Path(match.group(2)) == out / f"ckpt-{step:07d}"
    assert (out / "latest").read_text(encoding="utf-8").strip() == f"ckpt-{step:07d}"
    assert load_checkpoint(out).step == step
    # Every completed step was logged, and the checkpoint is the last of them.
    assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 1))

    status, _, err = run_cli(
        capsys, "train", "--resume", "--out", out, "--max-steps", str(step + 2)
    )
    assert status == 0, err
    assert f"resuming at step {step}" in err
    assert (out / "latest").read_text(encoding="utf-8").strip() == f"ckpt-{step + 2:07d}"
    assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 3))


# ---------------------------------------------------------------------------------------
# tfs attention-plot (the figure itself: test_attention_plot.py)

PLOT_CHARS = "abcdefgh \n\\"
# Three heads, two layers; init_std 0.5 gives patterns far from uniform, so layers differ.
PLOT_CONFIG = DecoderConfig(
    d_vocab=len(PLOT_CHARS), d_model=16, n_heads=3, d_head=4, d_mlp=32, n_layers=2, n_ctx=12,
    init_std=0.5,
)  # fmt: skip
PROMPT = r"ab cd\nef\\g"  # as typed on a shell line: 10 tokens with a newline and a backslash
PROMPT_TEXT = "ab cd\nef\\g"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding one checkpoint of an untrained tiny model (no training)."""
    out = tmp_path_factory.mktemp("attention") / "run"
    torch.manual_seed(0)
    save_checkpoint(
        out,
        step=0,
        model=Decoder(PLOT_CONFIG),
        model_config=PLOT_CONFIG,
        train_config={},
        tokenizer=CharTokenizer(list(PLOT_CHARS)).to_dict(),
        state={},
    )
    return out


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5000


def test_cli_plots_the_requested_layer(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[tuple[Tensor, list[str]]] = []

    def recording_plot(
        patterns: Tensor, labels: Sequence[str], out: str | Path, *, title: str
    ) -> Path:
        drawn.append((patterns, list(labels)))
        return plot_attention(patterns, labels, out, title=title)

    monkeypatch.setattr(tfs_decoder.training.commands, "plot_attention", recording_plot)
    model, _, _ = load_model(checkpoint)
    tokens = torch.tensor([CharTokenizer(list(PLOT_CHARS)).encode(PROMPT_TEXT)])
    for layer, index in [("1", 1), ("-1", 1), ("0", 0), ("-2", 0)]:
        out = tmp_path / f"layer{layer}.png"
        argv: list[str | Path] = ["attention-plot", "--checkpoint", checkpoint, "--prompt", PROMPT,
                "--layer", layer, "--out", out, "--device", "cpu"]  # fmt: skip
        status, stdout, err = run_cli(capsys, *argv)
        assert (status, err) == (0, "")
        assert stdout == f"wrote {out} (layer {index}, 3 heads, 10 tokens)\n"
        assert_png(out)
        patterns, labels = drawn[-1]
        assert labels == list(PROMPT_TEXT)
        expected = attention_patterns(model, tokens, index)[0]
        torch.testing.assert_close(patterns, expected, atol=1e-6, rtol=1e-5)
    # The two layers really differ, so the checks above tell them apart.
    assert not torch.allclose(drawn[0][0], drawn[2][0], atol=1e-3)


def test_cli_writes_attention_png_in_the_current_directory_by_default(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    status, stdout, _ = run_cli(
        capsys, "attention-plot", "--checkpoint", checkpoint, "--prompt", "abc"
    )
    assert status == 0
    assert stdout.startswith("wrote attention.png ")
    assert_png(tmp_path / "attention.png")


def test_help_lists_the_command_and_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0
    assert "attention-plot" in out
    status, out, _ = run_cli(capsys, "attention-plot", "--help")
    assert status == 0
    for flag in ("--checkpoint", "--prompt", "--layer", "--out", "--device", "--dtype"):
        assert re.search(rf"{flag}\b", out), flag
    assert "attention.png" in out


@pytest.mark.parametrize(
    ("extra", "patterns"),
    [
        (["--layer", "2"], [r"--layer: expected a layer in \[-2, 1\]", r"2 layers", r"got 2$"]),
        (["--layer", "-3"], [r"--layer: expected a layer in \[-2, 1\]", r"got -3$"]),
        (["--layer", "one"], [r"--layer", r"invalid int value: 'one'"]),
        (["--prompt", "aZ"], [r"--prompt", r"'Z'", r"index 1"]),
        (["--prompt", ""], [r"--prompt: expected at least one character, got ''"]),
        (["--prompt", "a" * 13], [r"--prompt: expected at most n_ctx=12 tokens",
                                           r"got 13 tokens"]),
        (["--out", "attention.jpg"], [r"--out: expected a file name ending in \.png",
                                      r"'attention\.jpg'"]),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    extra: list[str],
    patterns: list[str],
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["attention-plot", "--checkpoint", str(checkpoint), "--prompt", "abc",
            "--out", str(tmp_path / "a.png"), *extra]  # fmt: skip
    status, _, err = run_cli(capsys, *argv)
    assert_one_error_line(status, err, *patterns)
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_and_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(
        capsys, "attention-plot", "--checkpoint", tmp_path / "nope", "--prompt", "abc"
    )
    assert_one_error_line(status, err, r"checkpoint: .*nope does not exist")
    status, _, err = run_cli(capsys, "attention-plot", "--prompt", "abc")
    assert_one_error_line(status, err, r"--checkpoint")
    status, _, err = run_cli(capsys, "attention-plot", "--checkpoint", tmp_path)
    assert_one_error_line(status, err, r"--prompt")


def test_unwritable_out_is_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base: list[str | Path] = [
        "attention-plot",
        "--checkpoint",
        checkpoint,
        "--prompt",
        "abc",
        "--out",
    ]
    status, _, err = run_cli(capsys, *base, tmp_path)
    assert_one_error_line(status, err, r"--out: expected a PNG file to write, got the directory")
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory", encoding="utf-8")
    status, _, err = run_cli(capsys, *base, blocker / "a.png")
    assert_one_error_line(status, err, r"--out: cannot write '.*file\.txt/a\.png'")
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]
