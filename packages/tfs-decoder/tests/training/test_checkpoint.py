"""Checkpoints: round trip, crash safety (simulated and a real SIGKILL), clear load errors."""

from __future__ import annotations

import dataclasses
import fractions
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

from tfs_decoder import Decoder, DecoderConfig
from tfs_decoder.training import checkpoint as ck
from tfs_decoder.training.checkpoint import Checkpoint, rng_state, save_checkpoint, set_rng_state
from tfs_decoder.training.errors import CheckpointError
from tfs_decoder.training.load import load_checkpoint, load_model, verify_config_matches

TINY = DecoderConfig(d_vocab=11, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_layers=2, n_ctx=6)
TRAIN = {"lr": 0.001, "batch_size": 4, "data": "corpus.txt", "betas": [0.9, 0.95]}
TOKENIZER = {"kind": "char", "vocab": list("abcdefghij\n")}


def trained(seed: int, steps: int = 2) -> tuple[Decoder, torch.optim.Optimizer]:
    """A tiny Decoder and an AdamW that has taken ``steps`` steps (so both have state)."""
    torch.manual_seed(seed)
    model = Decoder(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        step(model, optimizer, g)
    return model, optimizer


def step(model: Decoder, optimizer: torch.optim.Optimizer, g: torch.Generator) -> None:
    tokens = torch.randint(0, TINY.d_vocab, (3, TINY.n_ctx), generator=g)
    logits: Tensor = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    optimizer.zero_grad()
    torch.autograd.backward(loss)
    optimizer.step()


def save(out: Path, step: int, seed: int, **kwargs: Any) -> tuple[Path, Decoder]:
    model, optimizer = trained(seed)
    path = save_checkpoint(
        out,
        step=step,
        model=model,
        model_config=TINY,
        train_config=TRAIN,
        tokenizer=TOKENIZER,
        state={"optimizer": optimizer.state_dict(), "seed": seed},
        **kwargs,
    )
    return path, model


def assert_same_weights(state: dict[str, Tensor], model: nn.Module) -> None:
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype, name
        assert torch.equal(state[name], tensor), name


def assert_equal_nested(a: Any, b: Any) -> None:
    """Exact equality of nested dicts/lists/tuples with tensors inside."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor)
        assert a.dtype == b.dtype
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict)
        assert a.keys() == b.keys()
        for key in a:
            assert_equal_nested(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert type(a) is type(b)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_equal_nested(x, y)
    else:
        assert a == b


def entries(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()}


# ---------------------------------------------------------------------------------------
# Round trip


def test_round_trip_is_exact(tmp_path: Path) -> None:
    model, optimizer = trained(seed=3)
    random.seed(7)
    torch.manual_seed(8)
    rngs = rng_state()
    state = {
        "optimizer": optimizer.state_dict(),
        "rng": rngs,
        "python_random_raw": random.getstate(),
        "scheduler": {"last_epoch": 20, "base_lrs": [0.001]},
        "tokens_seen": 12345,
        "best_val": 1.25,
    }
    path = save_checkpoint(
        tmp_path / "run",
        step=20,
        model=model,
        model_config=TINY,
        train_config=TRAIN,
        tokenizer=TOKENIZER,
        state=state,
    )
    assert path == tmp_path / "run" / "ckpt-0000020"
    assert sorted(entries(path)) == sorted(ck.CHECKPOINT_FILES)
    assert entries(tmp_path / "run") == {"latest", "ckpt-0000020"}
    assert (tmp_path / "run" / "latest").read_text() == "ckpt-0000020\n"

    loaded = load_checkpoint(tmp_path / "run")
    assert isinstance(loaded, Checkpoint)
    assert loaded.path == path
    assert loaded.step == 20
    assert loaded.model_config == TINY
    assert loaded.train_config == TRAIN
    assert loaded.tokenizer == TOKENIZER
    assert_same_weights(loaded.model_state, model)
    assert loaded.state["step"] == 20
    assert_equal_nested({k: v for k, v in loaded.state.items() if k != "step"}, state)
    assert loaded.state["python_random_raw"] == state["python_random_raw"]
    assert torch.equal(loaded.state["rng"]["torch"], rngs["torch"])
    assert loaded.state["rng"]["python"] == rngs["python"]


def test_json_files_are_sorted_and_indented(tmp_path: Path) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    text = (path / "config.json").read_text()
    config = json.loads(text)
    assert list(config) == ["model", "train"]
    assert config["model"] == dataclasses.asdict(TINY)
    assert list(config["model"]) == sorted(config["model"])
    assert text == json.dumps(config, sort_keys=True, indent=2) + "\n"
    assert json.loads((path / "tokenizer.json").read_text()) == TOKENIZER


def test_state_file_loads_with_weights_only(tmp_path: Path) -> None:
    model, optimizer = trained(seed=1)
    path = save_checkpoint(
        tmp_path,
        step=5,
        model=model,
        model_config=TINY,
        train_config=TRAIN,
        tokenizer=TOKENIZER,
        state={"optimizer": optimizer.state_dict(), "rng": rng_state(), "py": random.getstate()},
    )
    state = torch.load(path / "state.pt", weights_only=True)
    assert state["step"] == 5
    assert state["py"] == random.getstate()
    assert_equal_nested(state["optimizer"], optimizer.state_dict())
    weights = safetensors.torch.load_file(path / "model.safetensors")
    assert_same_weights(weights, model)


def test_rng_state_restores_python_and_torch_streams(tmp_path: Path) -> None:
    random.seed(1)
    torch.manual_seed(2)
    path, _ = save(tmp_path, step=1, seed=0)  # consumes some torch randomness (init)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = ([random.random() for _ in range(3)], torch.rand(4))
    random.seed(99)
    torch.manual_seed(99)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = ([random.random() for _ in range(3)], torch.rand(4))
    assert again[0] == expected[0]
    assert torch.equal(again[1], expected[1])
    assert path.exists()


def test_resumed_optimizer_continues_exactly(tmp_path: Path) -> None:
    model, optimizer = trained(seed=4)
    save_checkpoint(
        tmp_path,
        step=2,
        model=model,
        model_config=TINY,
        train_config=TRAIN,
        tokenizer=TOKENIZER,
        state={"optimizer": optimizer.state_dict()},
    )
    resumed, _, checkpoint = load_model(tmp_path)
    assert isinstance(resumed, Decoder)  # no learner's module in the saved settings
    resumed.train()
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2, betas=(0.9, 0.95))
    resumed_optimizer.load_state_dict(checkpoint.state["optimizer"])
    for model_, optimizer_ in ((model, optimizer), (resumed, resumed_optimizer)):
        g = torch.Generator().manual_seed(123)
        for _ in range(2):
            step(model_, optimizer_, g)
    assert_same_weights(resumed.state_dict(), model)


def test_load_model_rebuilds_the_decoder(tmp_path: Path) -> None:
    path, model = save(tmp_path, step=3, seed=2)
    loaded, tokenizer, checkpoint = load_model(path)  # a checkpoint directory directly
    assert isinstance(loaded, Decoder)
    assert not loaded.training
    assert loaded.config == TINY
    assert tokenizer == TOKENIZER
    assert checkpoint.path == path
    tokens = torch.randint(0, TINY.d_vocab, (2, 5), generator=torch.Generator().manual_seed(0))
    model.eval()
    assert torch.equal(loaded(tokens), model(tokens))


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W_E = nn.Parameter(torch.randn(4, 3))
            self.W_U = self.W_E  # tied: one storage, two names

    path = save_checkpoint(
        tmp_path,
        step=0,
        model=Tied(),
        model_config=TINY,
        train_config={},
        tokenizer=TOKENIZER,
        state={},
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_state.keys() == {"W_E", "W_U"}
    assert torch.equal(checkpoint.model_state["W_E"], checkpoint.model_state["W_U"])


def test_compiled_wrapper_is_unwrapped(tmp_path: Path) -> None:
    """torch.compile's OptimizedModule keeps the model as ``_orig_mod`` (its state_dict names
    gain a ``_orig_mod.`` prefix); the checkpoint must use the plain Decoder's names."""

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

    model, _ = trained(seed=5, steps=0)
    assert next(iter(Wrapper(model).state_dict())).startswith("_orig_mod.")
    save_checkpoint(
        tmp_path,
        step=0,
        model=Wrapper(model),
        model_config=TINY,
        train_config={},
        tokenizer=TOKENIZER,
        state={},
    )
    assert_same_weights(load_model(tmp_path)[0].state_dict(), model)


# ---------------------------------------------------------------------------------------
# Retention


def test_keeps_the_newest_checkpoints(tmp_path: Path) -> None:
    for step_ in (10, 20, 30, 40):
        save(tmp_path, step=step_, seed=0)
    assert entries(tmp_path) == {"latest", "ckpt-0000030", "ckpt-0000040"}
    save(tmp_path, step=50, seed=0, keep=1)
    assert entries(tmp_path) == {"latest", "ckpt-0000050"}


def test_resuming_from_an_earlier_step_keeps_later_checkpoints(tmp_path: Path) -> None:
    """A later checkpoint left by an abandoned run is not deleted; re-reaching its step
    replaces it."""
    for step_ in (10, 20, 30):
        save(tmp_path, step=step_, seed=0, keep=3)
    save(tmp_path, step=25, seed=1, keep=2)
    assert entries(tmp_path) == {"latest", "ckpt-0000020", "ckpt-0000025", "ckpt-0000030"}
    assert load_checkpoint(tmp_path).step == 25
    _, model = save(tmp_path, step=30, seed=2, keep=2)
    assert entries(tmp_path) == {"latest", "ckpt-0000025", "ckpt-0000030"}
    assert_same_weights(load_checkpoint(tmp_path).model_state, model)


# ---------------------------------------------------------------------------------------
# Crash safety


def raise_after(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str, *, calls: int = 0
) -> None:
    """Make ``owner.name`` raise OSError on the call after ``calls`` successful ones."""
    original = getattr(owner, name)
    count = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        if count[0] >= calls:
            raise OSError(f"simulated crash in {name}")
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize(
    ("owner", "name", "calls"),
    [
        (safetensors.torch, "save_file", 0),  # the weights
        (ck, "_write_bytes", 0),  # config.json
        (ck, "_write_bytes", 1),  # tokenizer.json
        (torch, "save", 0),  # state.pt
        (ck, "_fsync_dir", 0),  # just before the rename
        (os, "rename", 0),  # the rename itself
    ],
)
def test_crash_before_the_rename_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: object, name: str, calls: int
) -> None:
    _, first = save(tmp_path, step=1, seed=0)
    latest = (tmp_path / "latest").read_bytes()
    raise_after(monkeypatch, owner, name, calls=calls)
    with pytest.raises(OSError, match="simulated crash"):
        save(tmp_path, step=2, seed=1)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_bytes() == latest
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 1
    assert_same_weights(checkpoint.model_state, first)
    assert entries(tmp_path) == {"latest", "ckpt-0000001"}  # the partial save was removed


def test_crash_after_the_rename_keeps_latest_and_is_replaced_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = save(tmp_path, step=1, seed=0)
    raise_after(monkeypatch, os, "replace")  # writing `latest`
    with pytest.raises(OSError, match="simulated crash"):
        save(tmp_path, step=2, seed=1)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text() == "ckpt-0000001\n"
    assert "ckpt-0000002" in entries(tmp_path)  # complete but never published
    assert_same_weights(load_checkpoint(tmp_path).model_state, first)

    _, second = save(tmp_path, step=2, seed=2)  # the resumed run reaches step 2 again
    assert_same_weights(load_checkpoint(tmp_path).model_state, second)
    assert entries(tmp_path) == {"latest", "ckpt-0000001", "ckpt-0000002"}


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_resaving_the_latest_step_is_safe_at_every_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    """Saving the step ``latest`` already names (a resumed run that saves again at once)
    must move that directory aside: a crash at any of the 4 renames/replaces leaves
    ``latest`` naming a complete checkpoint, the old one or the new one."""
    _, old = save(tmp_path, step=1, seed=0)
    count = [0]

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            count[0] += 1
            if count[0] == fail_at:
                raise OSError("simulated crash")
            return original(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(os, "rename", counting(os.rename))
    monkeypatch.setattr(os, "replace", counting(os.replace))
    with pytest.raises(OSError, match="simulated crash"):
        save(tmp_path, step=1, seed=1)
    monkeypatch.undo()
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.step == 1
    assert checkpoint.state["seed"] in (0, 1)
    new, _ = trained(seed=1)
    assert_same_weights(checkpoint.model_state, old if checkpoint.state["seed"] == 0 else new)

    _, final = save(tmp_path, step=1, seed=2)
    assert_same_weights(load_checkpoint(tmp_path).model_state, final)
    assert entries(tmp_path) == {"latest", "ckpt-0000001"}


def test_resaving_the_latest_step_uses_four_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the parametrisation above: it must cover every rename of the re-save."""
    save(tmp_path, step=1, seed=0)
    calls: list[str] = []
    for name in ("rename", "replace"):
        original = getattr(os, name)

        def record(*args: Any, _name: str = name, _f: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _f(*args, **kw)

        monkeypatch.setattr(os, name, record)
    save(tmp_path, step=1, seed=1)
    assert calls == ["replace", "rename", "rename", "replace"]


CHILD = textwrap.dedent(
    """
    import io, os, sys, time
    import torch
    from tfs_decoder import Decoder, DecoderConfig
    from tfs_decoder.training import checkpoint as ck

    out, marker, stage = sys.argv[1], sys.argv[2], sys.argv[3]

    def stall():
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)

    if stage == "state":
        real_save = torch.save

        def half_save(obj, f):  # write half of state.pt, then hang until killed
            buffer = io.BytesIO()
            real_save(obj, buffer)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            stall()

        torch.save = half_save
    else:
        real_replace = os.replace

        def slow_replace(src, dst):  # the new ckpt dir is in place, `latest` not yet
            if os.path.basename(dst) == "latest":
                stall()
            real_replace(src, dst)

        os.replace = slow_replace

    config = DecoderConfig(**{CONFIG})
    torch.manual_seed(1)
    ck.save_checkpoint(out, step=2, model=Decoder(config), model_config=config,
                       train_config={}, tokenizer={"kind": "char"}, state={})
    """
).replace("{CONFIG}", repr(dataclasses.asdict(TINY)))


@pytest.fixture
def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else the child recompiles torch (~10 s)
    return env


@pytest.mark.parametrize("stage", ["state", "latest"])
def test_sigkill_mid_save_keeps_the_previous_checkpoint(
    tmp_path: Path, child_env: dict[str, str], stage: str
) -> None:
    out = tmp_path / "run"
    _, first = save(out, step=1, seed=0)
    marker = tmp_path / "marker"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(out), str(marker), stage],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            if child.poll() is not None:
                _, err = child.communicate()
                pytest.fail(f"child exited early ({child.returncode}): {err.decode()[-2000:]}")
            assert time.monotonic() < deadline, "child never reached the marker"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.communicate()
    assert child.returncode == -signal.SIGKILL

    pid = int(marker.read_text())
    tmp = out / f".tmp-ckpt-2-{pid}"
    if stage == "state":
        assert entries(out) == {"latest", "ckpt-0000001", tmp.name}
        assert entries(tmp) == set(ck.CHECKPOINT_FILES)  # state.pt half-written
    else:
        assert "ckpt-0000002" in entries(out)  # complete, but `latest` was not moved yet
    assert (out / "latest").read_text() == "ckpt-0000001\n"
    checkpoint = load_checkpoint(out)
    assert checkpoint.step == 1
    assert_same_weights(checkpoint.model_state, first)

    _, second = save(out, step=2, seed=3)  # the next save cleans up and replaces
    assert entries(out) == {"latest", "ckpt-0000001", "ckpt-0000002"}
    assert_same_weights(load_checkpoint(out).model_state, second)


# ---------------------------------------------------------------------------------------
# Load errors: one line, naming the file


def load_error(path: Path, match: str) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 400
    return info.value


def test_error_missing_path(tmp_path: Path) -> None:
    load_error(tmp_path / "nope", r"nope does not exist")


def test_error_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    load_error(tmp_path / "model.bin", r"expected a run directory .*got the file .*model\.bin")


def test_error_no_checkpoint_in_directory(tmp_path: Path) -> None:
    load_error(tmp_path, r"no checkpoint in .*expected .*latest or .*model\.safetensors")


def test_error_latest_names_a_missing_directory(tmp_path: Path) -> None:
    save(tmp_path, step=1, seed=0)
    (tmp_path / "latest").write_text("ckpt-0000009\n")
    load_error(tmp_path, r"latest names .*ckpt-0000009, which does not exist")


@pytest.mark.parametrize("content", ["", "../elsewhere", "/abs/ckpt-0000001"])
def test_error_latest_is_not_a_checkpoint_name(tmp_path: Path, content: str) -> None:
    save(tmp_path, step=1, seed=0)
    (tmp_path / "latest").write_text(content)
    load_error(tmp_path, r"latest should name a checkpoint directory")


@pytest.mark.parametrize("file", ck.CHECKPOINT_FILES)
def test_error_missing_file(tmp_path: Path, file: str) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    (path / file).unlink()
    if file == "model.safetensors":  # then the run dir's `latest` names an incomplete dir
        load_error(tmp_path, r"latest names .*ckpt-0000001, which has no model\.safetensors")
    else:
        load_error(tmp_path, rf"{file} is missing")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_error_corrupt_safetensors(tmp_path: Path, damage: str) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    file = path / "model.safetensors"
    data = file.read_bytes()
    corrupt = {
        "truncate": data[: len(data) // 2],
        "garbage": bytes(range(256)) * 4,
        "empty": b"",
    }[damage]
    file.write_bytes(corrupt)
    error = load_error(tmp_path, r"model\.safetensors is truncated or corrupt")
    assert error.__cause__ is not None


@pytest.mark.parametrize("file", ["config.json", "tokenizer.json"])
def test_error_corrupt_json(tmp_path: Path, file: str) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    text = (path / file).read_text()
    (path / file).write_text(text[: len(text) // 2])
    error = load_error(tmp_path, rf"{file} is not valid JSON")
    assert isinstance(error.__cause__, json.JSONDecodeError)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ([1, 2], r"config\.json: expected a JSON object, got list"),
        ({"train": {}}, r"config\.json: expected an object under 'model'"),
        (
            {"model": {"d_model": 8}, "train": {}},
            r"config\.json: model config has missing fields \['activation'",
        ),
        (
            {"model": {**dataclasses.asdict(TINY), "n_layers": 0}, "train": {}},
            r"config\.json: ValueError: n_layers: expected a positive int, got 0",
        ),
    ],
)
def test_error_bad_config_contents(tmp_path: Path, config: object, match: str) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    (path / "config.json").write_text(json.dumps(config))
    load_error(tmp_path, match)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickled object", "no step"])
def test_error_corrupt_state(tmp_path: Path, damage: str) -> None:
    path, _ = save(tmp_path, step=1, seed=0)
    file = path / "state.pt"
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[:100])
    elif damage == "garbage":
        file.write_bytes(b"this is not a torch file")
    elif damage == "pickled object":  # weights_only refuses to build arbitrary classes
        torch.save({"step": 1, "x": fractions.Fraction(1, 3)}, file)
    else:
        torch.save({"optimizer": {}}, file)
    if damage == "no step":
        load_error(tmp_path, r"state\.pt: expected a non-negative int 'step', got None")
    else:
        error = load_error(tmp_path, r"state\.pt is corrupt or unreadable: \w+")
        assert error.__cause__ is not None


class _WritesAFile:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for code hidden in a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_loading_never_executes_code_from_state_pt(tmp_path: Path) -> None:
    path, _ = save(tmp_path / "run", step=1, seed=0)
    marker = tmp_path / "executed"
    torch.save({"step": 1, "optimizer": {}, "payload": _WritesAFile(marker)}, path / "state.pt")
    error = load_error(tmp_path / "run", r"state\.pt is corrupt or unreadable: \w+")
    assert error.__cause__ is not None
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "run")
    assert not marker.exists()
    # The payload is real: an unrestricted unpickler does run it.
    torch.load(path / "state.pt", weights_only=False)
    assert marker.exists()


def edit_weights(path: Path, edit: Callable[[dict[str, Tensor]], None]) -> None:
    file = path / "model.safetensors"
    tensors = dict(safetensors.torch.load_file(file))
    edit(tensors)
    safetensors.torch.save_file(tensors, file)


def test_load_model_lists_missing_unexpected_and_wrong_shape(tmp_path: Path) -> None:
    path, _ = save(tmp_path, step=1, seed=0)

    def edit(tensors: dict[str, Tensor]) -> None:
        del tensors["blocks.1.mlp.W_in"]
        del tensors["ln_final.b"]
        tensors["blocks.2.attn.W_Q"] = torch.zeros(2, 8, 4)
        tensors["unembed.W_U"] = torch.zeros(8, 12)

    edit_weights(path, edit)
    load_checkpoint(tmp_path)  # the files themselves are fine
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "model.safetensors does not fit the model config" in message
    assert "missing blocks.1.mlp.W_in, ln_final.b" in message
    assert "unexpected blocks.2.attn.W_Q" in message
    assert "wrong shape unembed.W_U (checkpoint [8, 12], model [8, 11])" in message


# ---------------------------------------------------------------------------------------
# Config comparison and save-side argument checks


def test_verify_config_matches() -> None:
    verify_config_matches(TINY, dataclasses.replace(TINY))
    # The backend computes the same function of the same weights: switching is allowed.
    verify_config_matches(TINY, dataclasses.replace(TINY, attention_backend="sdpa"))
    requested = dataclasses.replace(TINY, n_layers=4, dropout=0.1)
    with pytest.raises(CheckpointError) as info:
        verify_config_matches(TINY, requested)
    message = str(info.value)
    assert "n_layers: checkpoint has 2, flags ask for 4" in message
    assert "dropout: checkpoint has 0.0, flags ask for 0.1" in message
    assert "d_model" not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step": -1}, ValueError, r"step: expected a non-negative int, got -1"),
        ({"keep": 0}, ValueError, r"keep: expected an int >= 1, got 0"),
        ({"train_config": {"data": Path("x")}}, TypeError, r"train_config: expected JSON"),
        ({"train_config": {"lr": float("nan")}}, TypeError, r"train_config: expected JSON"),
        ({"tokenizer": {"vocab": {"a"}}}, TypeError, r"tokenizer: expected JSON"),
        ({"state": {"step": 3}}, ValueError, r"state: has step=3 but step=1"),
    ],
)
def test_save_rejects_bad_arguments_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    model, _ = trained(seed=0, steps=0)
    arguments: dict[str, Any] = {
        "step": 1,
        "model": model,
        "model_config": TINY,
        "train_config": TRAIN,
        "tokenizer": TOKENIZER,
        "state": {},
    }
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path / "run", **arguments)
    assert not (tmp_path / "run").exists()
