"""Every example runs, and learns what its docstring says it learns.

Each example is imported by path (the folder is not a package) and its ``main(seed)``
called; the learning thresholds below were measured over several seeds with the runtime
type checker on (see each test's docstring). Then every example runs as a script.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import runpy
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent
EXAMPLES = ["encoder_classifier", "induction_heads", "post_ln_transformer", "gated_mlp_decoder"]
# What an example may import: the tfs packages, torch, and a little of the standard library.
ALLOWED_IMPORTS = {"tfs_embeddings", "tfs_attention", "tfs_mlp", "tfs_decoder", "torch"}
STDLIB = {"__future__", "argparse", "dataclasses", "math"}
# The torch layers the packages replace; an example uses the packages' components instead.
FORBIDDEN = [
    "nn.Linear",
    "nn.LayerNorm",
    "nn.Embedding",
    "nn.MultiheadAttention",
    "scaled_dot_product_attention",
    "torch.nn.functional",
]


@cache
def load(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as the module ``<name>``."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_imports_only_the_packages_and_torch(name: str) -> None:
    source = (HERE / f"{name}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    assert imported - STDLIB <= ALLOWED_IMPORTS
    assert imported & ALLOWED_IMPORTS - {"torch"}  # built from the packages
    assert [word for word in FORBIDDEN if word in source] == []


@pytest.mark.learning
def test_encoder_classifier_learns_order_and_its_control_cannot() -> None:
    """Task: 12 tokens, one A and one B among 8 filler ids; is A before B? Model: Embed +
    SinusoidalPositionalEncoding, one ResidualBlock with non-causal MultiHeadAttention
    (4 heads, d_model 32) and MLP, LayerNorm, mean over positions, Unembed(32, 2).
    AdamW lr 3e-3, 250 steps of 64 fresh sequences. Evaluated on 500 fresh sequences and
    their A/B-swapped copies. Control: the same without positional encoding.

    Measured over seeds 0..9: accuracy 0.952..1.000; control exactly 0.500 for every seed
    (without positions the model gives a sequence and its swapped copy the same output).
    Thresholds: accuracy >= 0.9 (margin 0.052); control within 0.01 of 0.5.
    """
    result = load("encoder_classifier").main(seed=0)
    assert result.accuracy >= 0.9
    assert abs(result.control_accuracy - 0.5) <= 0.01


@pytest.mark.learning
def test_induction_heads_form_in_two_attention_only_layers() -> None:
    """Task: 24 tokens, a block of P distinct ids (of 32) repeated, P uniform in [8, 12].
    Model: Embed + LearnedPositionalEmbedding, two MultiHeadAttention layers (4 heads,
    d_model 64), Unembed; no MLP, no LayerNorm. AdamW lr 1e-2, 300 steps of 64 sequences,
    loss on the repeat. Patterns read through blocks.{0,1}.hook_pattern on 500 fresh
    sequences.

    Measured over seeds 0..7: accuracy on the repeat 0.989..0.999; best layer-1 induction
    score 0.730..0.792 (uniform attention would give about 0.06); best layer-0
    previous-token score 0.476..0.584 (uniform: about 0.12); final training loss
    0.004..0.10 from 3.466 = ln 32.
    Thresholds: accuracy >= 0.9 (margin 0.089), induction score >= 0.5 (margin 0.23),
    previous-token score >= 0.35 (margin 0.126), final loss < 0.5.
    """
    result = load("induction_heads").main(seed=0)
    assert result.accuracy >= 0.9
    assert len(result.induction_scores) == len(result.previous_token_scores) == 4
    assert max(result.induction_scores) >= 0.5
    assert max(result.previous_token_scores) >= 0.35
    assert result.final_loss < 0.5 < 3.0 < result.first_loss


@pytest.mark.learning
def test_post_ln_transformer_learns_to_sort() -> None:
    """Task: 6 digits of 0..5, then the same sorted; next-token loss on the sorted half.
    Model: sqrt(d_model)-scaled Embed + SinusoidalPositionalEncoding, two PostLNBlocks
    (causal MultiHeadAttention with 4 heads, d_model 32; MLP d_mlp 64 with ReLU; LayerNorm
    after each residual add), Unembed. AdamW lr 5e-3 with 50 warm-up steps, 250 steps of 64.
    Evaluated on 1000 fresh sequences.

    Measured over seeds 0..15: sorted-half token accuracy 0.951..1.000, sequences entirely
    right (what greedy decoding would sort) 0.718..1.000.
    Thresholds: token accuracy >= 0.9 (margin 0.051), sequence accuracy >= 0.5 (margin 0.218).
    """
    result = load("post_ln_transformer").main(seed=0)
    assert result.token_accuracy >= 0.9
    assert result.sequence_accuracy >= 0.5
    assert result.final_loss < result.first_loss


def test_gated_mlp_decoder_uses_the_custom_mlp_in_every_block() -> None:
    module = load("gated_mlp_decoder")
    model = module.make_model()
    assert [type(block.mlp) for block in model.blocks] == [module.GatedMLP] * 2
    assert [type(block) for block in model.blocks] == [type(module.make_block())] * 2


@pytest.mark.learning
def test_gated_mlp_decoder_learns_progressions_and_generates() -> None:
    """Task: arithmetic progressions mod 12 with random start and step, 12 tokens; loss on
    the tokens after the first two. Model: Decoder(d_model 64, 4 heads of 16, d_mlp 128,
    2 layers) with make_mlp building a SwiGLU GatedMLP. AdamW lr 3e-3, 150 steps of 64.
    Evaluated on 500 fresh sequences: greedy generate() from 2-token prompts, with and
    without the KV cache.

    Measured over seeds 0..11: first loss 2.487..2.507 (ln 12 = 2.485), final loss
    0.0019..0.0021, loss with the gated MLPs zero-ablated 0.95..2.19, continuations exactly
    right 1.000 for every seed, std(W_out) / std(W_in) at init 0.494..0.508
    (1 / sqrt(2 n_layers) = 0.5).
    Thresholds: final loss < 0.05 (margin > 20x), ablated loss > 0.5 (margin 0.45),
    exact continuations >= 0.95, init ratio in [0.45, 0.55] (about 4 standard errors).
    """
    result = load("gated_mlp_decoder").main(seed=0)
    assert result.first_loss > 2.0
    assert result.final_loss < 0.05
    assert result.ablated_loss > 0.5
    assert result.generated_exact >= 0.95
    assert result.cache_matches
    assert result.block_matches
    assert 0.45 <= result.w_out_init_ratio <= 0.55
    assert result.gate_shape == (500, 12, 128)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_as_a_script(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--seed", "1", "--steps", "2"])
    runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) >= 3
    assert "nan" not in printed


def test_example_runs_in_a_fresh_interpreter() -> None:
    # Bytecode writing off would make the child recompile torch on import (~10 s).
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    path = HERE / "encoder_classifier.py"
    done = subprocess.run(
        [sys.executable, str(path), "--steps", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "accuracy with positions" in done.stdout
