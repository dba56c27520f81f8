"""``tfs train --model/--attention/--mlp/--layernorm FILE.py:Class``: a learner's own modules
train, save, resume, sample, evaluate and show their attention like tfs's; every mistake
in them is one ``tfs: error:`` line before any training step; and right components reach
tfs's validation loss.

The learner's code below is written without tfs (plain einsum, tfs's parameter names), as
a learner who followed ``tfs exercise`` would.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

from tfs_decoder.training.cli import main
from tfs_decoder.training.trainer import TrainConfig, train

# tfs's own forwards are shape-checked by their own tests; here they run beside learner
# code that is not, and the checks would only slow the runs down.
pytestmark = pytest.mark.usefixtures("without_runtime_type_checks")

Capture = pytest.CaptureFixture[str]

LEARNER = """
import math

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model, n_heads, d_head=None, causal=True):
        super().__init__()
        d_head = d_head or d_model // n_heads
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_K = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_V = nn.Parameter(torch.randn(n_heads, d_model, d_head) * 0.02)
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) * 0.02)
        self.b_Q = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_K = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_V = nn.Parameter(torch.zeros(n_heads, d_head))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.hook_pattern = nn.Identity()

    def forward(self, x):
        q = torch.einsum("bpm,hmd->bphd", x, self.W_Q) + self.b_Q
        k = torch.einsum("bpm,hmd->bphd", x, self.W_K) + self.b_K
        v = torch.einsum("bpm,hmd->bphd", x, self.W_V) + self.b_V
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        n = x.shape[1]
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        pattern = self.hook_pattern(scores.masked_fill(future, float("-inf")).softmax(-1))
        z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
        return torch.einsum("bqhd,hdm->bqm", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, d_model, d_mlp):
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp) * 0.02)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.randn(d_mlp, d_model) * 0.02)
        self.b_out = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        h = x @ self.W_in + self.b_in
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
        return h @ self.W_out + self.b_out


class LayerNorm(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.w + self.b


class Block(nn.Module):
    def __init__(self, d_model, n_heads, d_mlp):
        super().__init__()
        self.ln1 = LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.ln2 = LayerNorm(d_model)
        self.mlp = MLP(d_model, d_mlp)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = config
        self.W_E = nn.Parameter(torch.randn(c.d_vocab, c.d_model) * 0.02)
        self.W_pos = nn.Parameter(torch.randn(c.n_ctx, c.d_model) * 0.02)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.d_mlp) for _ in range(c.n_layers)
        )
        self.ln_final = LayerNorm(c.d_model)
        self.W_U = nn.Parameter(torch.randn(c.d_model, c.d_vocab) * 0.02)
        self.b_U = nn.Parameter(torch.zeros(c.d_vocab))

    def forward(self, tokens):
        x = self.W_E[tokens] + self.W_pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x) @ self.W_U + self.b_U


class Raises(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(d_model, d_model))

    def forward(self, x):
        return x @ self.W[:3]


class Narrow(nn.Module):
    def __init__(self, d_model, d_mlp):
        super().__init__()
        self.W_in = nn.Parameter(torch.zeros(d_model, d_mlp))

    def forward(self, x):
        return x @ self.W_in


class Keywords(nn.Module):
    def __init__(self, width):
        super().__init__()


def not_a_class():
    pass
"""
PARTS = ["--attention", "{l}:Attention", "--mlp", "{l}:MLP", "--layernorm", "{l}:LayerNorm"]
WHOLE = ["--model", "{l}:Decoder"]
TINY = [
    "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-mlp", "32", "--n-ctx", "16",
    "--batch-size", "4", "--max-steps", "4", "--warmup-steps", "1", "--eval-interval", "2",
    "--eval-steps", "2", "--log-interval", "1", "--sample-tokens", "8", "--sample-prompt",
    "the ", "--device", "cpu",
]  # fmt: skip
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "saw", "one", "big", "red", "dog"]


def write_corpus(path: Path, seed: int = 0, n_words: int = 600) -> Path:
    rng = random.Random(seed)
    path.write_text(" ".join(rng.choice(WORDS) for _ in range(n_words)), encoding="utf-8")
    return path


def write_learner(folder: Path, name: str = "mine.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(LEARNER, encoding="utf-8")
    return folder / name


def tfs(capsys: Capture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def one_error_line(status: int, err: str, *patterns: str) -> str:
    """The one ``tfs: error:`` line of a user error (exit 2, no traceback)."""
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("tfs: error: "), err
    for pattern in patterns:
        assert re.search(pattern, err), (pattern, err)
    return err


@dataclasses.dataclass
class Trained:
    learner: Path
    data: Path
    out: Path


def train_with(root: Path, flags: list[str], capsys: Capture) -> Trained:
    """A tiny ``tfs train`` run with the learner's modules ``flags`` name."""
    learner = write_learner(root / "src")
    data = write_corpus(root / "corpus.txt")
    out = root / "run"
    flags = [f.format(l=learner) for f in flags]
    status, _, err = tfs(capsys, "train", *TINY, "--data", data, "--out", out, *flags)
    assert status == 0, err
    return Trained(learner, data, out)


@pytest.fixture(params=["parts", "whole"])
def trained(request: pytest.FixtureRequest, tmp_path: Path, capsys: Capture) -> Trained:
    return train_with(tmp_path, PARTS if request.param == "parts" else WHOLE, capsys)


# ---------------------------------------------------------------------------------------
# A learner's modules work like tfs's


def test_train_records_the_learners_files_and_every_command_reloads_them(
    trained: Trained, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = json.loads((trained.out / "ckpt-0000004" / "config.json").read_text())["train"]
    targets = {k: saved[k] for k in ("model", "attention", "mlp", "layernorm") if saved[k]}
    assert targets  # absolute paths, whatever the current directory later is
    assert all(t.startswith(f"{trained.learner.resolve()}:") for t in targets.values())
    monkeypatch.chdir(tmp_path)

    status, out, err = tfs(capsys, "sample", "--checkpoint", trained.out, "--prompt", "the ",
                           "--max-new-tokens", "12", "--seed", "1", "--device", "cpu")  # fmt: skip
    assert status == 0, err
    assert out.startswith("the ")
    assert len(out.rstrip("\n")) == len("the ") + 12
    status, out, err = tfs(capsys, "eval", "--checkpoint", trained.out, "--device", "cpu")
    assert status == 0, err
    assert re.match(r"val loss \d\.\d{4} nats/token", out)
    png = tmp_path / "attention.png"
    status, out, err = tfs(capsys, "attention-plot", "--checkpoint", trained.out,
                           "--prompt", "the cat", "--out", png, "--device", "cpu")  # fmt: skip
    assert status == 0, err
    assert png.read_bytes().startswith(b"\x89PNG")
    status, _, err = tfs(capsys, "train", "--resume", "--out", trained.out, "--max-steps", "6")
    assert status == 0, err
    assert "step 6: val loss" in err
    assert "your " in err
    assert str(trained.learner.resolve()) in err


def test_train_help_documents_the_flags(capsys: Capture) -> None:
    status, out, _ = tfs(capsys, "train", "--help")
    assert status == 0
    text = " ".join(out.split())
    for flag in ("--model FILE.py:CLASS", "--attention FILE.py:CLASS", "--mlp FILE.py:CLASS",
                 "--layernorm FILE.py:CLASS"):  # fmt: skip
        assert flag in text
    assert "CLASS(config=DecoderConfig(...))" in text
    assert "CLASS(d_model=, n_heads=)" in text


# ---------------------------------------------------------------------------------------
# Mistakes: one line, exit 2, before any step


RAISES = "return x @ self.W[:3]"


def _line_of(code: str) -> int:
    return next(n for n, line in enumerate(LEARNER.split("\n"), 1) if code in line)


@pytest.mark.parametrize(
    ("flags", "patterns"),
    [
        (["--attention", "{d}/nowhere.py:A"], [r"--attention: no file .*nowhere\.py"]),
        (["--mlp", "{l}:Missing"], [r"--mlp: .*mine\.py has no 'Missing' \(it defines Attention"]),
        (["--mlp", "{l}:not_a_class"], [r"--mlp: expected a class, got function"]),
        (["--layernorm", "{l}"], [r"--layernorm: expected path/to/file\.py:ClassName"]),
        (
            ["--layernorm", "{l}:Keywords"],
            [
                r"--layernorm: Keywords\(d_model=16\) raised TypeError",
                r"expected the constructor of tfs's LayerNorm\(d_model, eps=1e-5\)",
            ],
        ),
        (
            ["--model", "{l}:Keywords"],
            [
                r"--model: Keywords\(config=DecoderConfig\(\.\.\.\)\) raised TypeError",
                r"expected the constructor of tfs's Decoder\(config\)",
            ],
        ),
        (
            ["--attention", "{l}:Raises"],
            [
                r"--attention: Raises\.forward on \[2, 4, 16\] raised RuntimeError",
                re.escape(f"mine.py:{_line_of(RAISES)} in forward: {RAISES}"),
            ],
        ),
        (
            ["--mlp", "{l}:Narrow"],
            [
                r"--mlp: Narrow\.forward on \[2, 4, 16\] returned shape \[2, 4, 32\]; "
                r"expected shape \[2, 4, 16\]"
            ],
        ),
        (
            ["--model", "{l}:Decoder", "--attention", "{l}:Attention"],
            [
                r"--model: expected no --attention, --mlp or --layernorm with it",
            ],
        ),
    ],
)
def test_bad_learner_modules_are_one_line_before_any_step(
    flags: list[str], patterns: list[str], tmp_path: Path, capsys: Capture
) -> None:
    learner = write_learner(tmp_path / "src")
    data = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "run"
    flags = [f.format(l=learner, d=tmp_path) for f in flags]
    status, _, err = tfs(capsys, "train", *TINY, "--data", data, "--out", out, *flags)
    one_error_line(status, err, *patterns)
    assert "_checking.py" not in err
    assert "learner.py" not in err
    assert not out.exists()  # nothing trained, nothing written


def test_a_moved_renamed_or_changed_learner_file_is_one_line(
    tmp_path: Path, capsys: Capture
) -> None:
    run = train_with(tmp_path, PARTS, capsys)
    moved = run.learner.with_name("moved.py")
    run.learner.rename(moved)
    for command in (["eval"], ["sample", "--prompt", "the "], ["attention-plot", "--prompt", "a"]):
        status, _, err = tfs(capsys, *command, "--checkpoint", run.out, "--device", "cpu")
        one_error_line(status, err, r"checkpoint .*ckpt-0000004: --attention: no file "
                       + re.escape(str(run.learner.resolve())))  # fmt: skip
    status, _, err = tfs(capsys, "train", "--resume", "--out", run.out, "--max-steps", "6")
    one_error_line(status, err, r"--attention: no file")

    run.learner.write_text(moved.read_text().replace("class MLP(", "class MyMLP("))
    status, _, err = tfs(capsys, "eval", "--checkpoint", run.out, "--device", "cpu")
    one_error_line(status, err, r"--mlp: .*mine\.py has no 'MLP' \(it defines .*MyMLP")

    wider = "torch.randn(d_model, d_mlp + 1)"
    run.learner.write_text(moved.read_text().replace("torch.randn(d_model, d_mlp)", wider))
    status, _, err = tfs(capsys, "eval", "--checkpoint", run.out, "--device", "cpu")
    one_error_line(status, err, r"wrong shape blocks\.0\.mlp\.W_in \(checkpoint \[16, 32\], "
                   r"model \[16, 33\]\)")  # fmt: skip


def test_attention_plot_needs_a_hook_pattern(tmp_path: Path, capsys: Capture) -> None:
    run = train_with(tmp_path, ["--attention", "{l}:Attention"], capsys)
    run.learner.write_text(LEARNER.replace("self.hook_pattern", "self.keep"))
    png = tmp_path / "a.png"
    status, _, err = tfs(capsys, "attention-plot", "--checkpoint", run.out, "--prompt", "the",
                         "--out", png, "--device", "cpu")  # fmt: skip
    one_error_line(status, err, r"expected a hook point blocks\.0\.attn\.hook_pattern",
                   r"self\.hook_pattern = nn\.Identity\(\)")  # fmt: skip
    assert not png.exists()


# ---------------------------------------------------------------------------------------
# Right components learn as tfs's do


@pytest.mark.learning
def test_right_components_reach_tfs_validation_loss(tmp_path: Path) -> None:
    """Acceptance: a learner whose components are right reaches tfs's validation loss
    within 0.05 nats at the same seed and step count.

    Task: next character of 3000 words drawn uniformly from 8 animal names (corpus seed
    1000 + seed), as test_train's learning test. 2 layers, d_model 32, 2 heads, d_mlp 64,
    n_ctx 16, batch 16, 60 steps, lr 1e-2 with cosine to 1e-3, init_std 0.02 (the
    learner's 0.02). Three runs at each seed: tfs's Decoder; tfs's Decoder with the
    learner's attention, MLP and LayerNorm; the learner's whole decoder.

    Seeds 0..9 measured: the learner's parts end within 6e-8 nats of tfs (their weights
    are drawn in tfs's order, so only rounding differs); the learner's whole decoder
    (no residual-write scaling, its own init order) ends -0.029 .. +0.030 nats from tfs.
    Threshold: |difference| <= 0.05 nats for both, at seed 0 (about 1 s a run).
    """
    seed = 0
    learner = write_learner(tmp_path / "src")
    words = ("cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat")
    rng = random.Random(1000 + seed)
    data = tmp_path / "words.txt"
    data.write_text(" ".join(rng.choice(words) for _ in range(3000)), encoding="utf-8")
    base = TrainConfig(
        data=str(data), out=str(tmp_path / "tfs"), d_model=32, n_layers=2, n_heads=2,
        d_mlp=64, n_ctx=16, batch_size=16, max_steps=60, warmup_steps=5, lr=1e-2,
        min_lr=1e-3, init_std=0.02, eval_interval=60, eval_steps=4, log_interval=60,
        seed=seed, sample_tokens=0, checkpoint_interval=0, checkpoint_minutes=0,
        device="cpu",
    )  # fmt: skip
    parts = dataclasses.replace(
        base, out=str(tmp_path / "parts"), attention=f"{learner}:Attention",
        mlp=f"{learner}:MLP", layernorm=f"{learner}:LayerNorm",
    )  # fmt: skip
    whole = dataclasses.replace(base, out=str(tmp_path / "whole"), model=f"{learner}:Decoder")
    reference = train(base, progress=False).val_loss
    assert abs(train(parts, progress=False).val_loss - reference) <= 0.05
    assert abs(train(whole, progress=False).val_loss - reference) <= 0.05
