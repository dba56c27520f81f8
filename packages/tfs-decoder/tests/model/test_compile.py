"""torch.compile traces the whole training forward and backward as one graph.

The written-out backward passes decide at run time whether to hand over to their formulas
(``formula_needed``); a check that dynamo cannot trace would split the graph at every op.
Every fast op also asks functorch whether a ``torch.func`` transform is active; torch
2.4's dynamo cannot trace that question (later versions answer it while tracing), so
where it cannot the step compiles in pieces and the test checks the results alone. Run in
a child process: the runtime type checks these tests install (typeguard wrappers) are not
traceable, and users compile without them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

CHILD = """
import torch
from tfs_decoder import Decoder, DecoderConfig, next_token_loss

torch.manual_seed(0)
config = DecoderConfig(d_vocab=20, d_model=16, n_heads=2, d_head=8, d_mlp=32, n_layers=2, n_ctx=40)
model = Decoder(config)
tokens = torch.randint(0, 20, (2, 40))  # 40 positions: two blocks of destinations

def loss(tokens):
    return next_token_loss(model(tokens), tokens)

def asks_functorch(x):
    return x + 1 if torch._C._are_functorch_transforms_active() else x

try:
    torch.compile(asks_functorch, fullgraph=True, backend="aot_eager")(torch.zeros(1))
    one_graph = True
except Exception:
    one_graph = False  # torch 2.4
compiled = torch.compile(loss, fullgraph=one_graph, backend="aot_eager")  # raises on a break
got = compiled(tokens)
want = loss(tokens)
params = list(model.parameters())
assert torch.equal(got, want), (got, want)
for g, w in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
print("one graph" if one_graph else "compiled in pieces")
"""


def test_the_training_step_compiles_into_one_graph() -> None:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # else the child recompiles torch (~10 s)
    result = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "compiled in pieces" if torch.__version__.startswith("2.4.") else "one graph"
    assert result.stdout.strip() == expected
