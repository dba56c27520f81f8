"""Fuzzing the checks: every starting file of ``tfs exercise`` completed with a correct
``forward``, then broken by random mutations (an operator, an axis, a constant, a line
removed, what comes back), and checked with ``tfs check``. A learner's code may raise and
return anything; the checks may fail it but never crash, and never report an error of
their own (an ``ERROR`` line). The nine completed files also make one decoder of the
learner's own classes, which passes ``tfs check decoder``."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from tfs_decoder.checks.exercise import COMPONENTS, Component
from tfs_decoder.training.cli import main

Capture = pytest.CaptureFixture[str]
# Learner files are not type-checked, and tfs's checks run here over a hundred times.
pytestmark = pytest.mark.usefixtures("without_runtime_type_checks")

SOLUTIONS = {
    "layernorm": """
centred = x - x.mean(dim=-1, keepdim=True)
variance = centred.pow(2).mean(dim=-1, keepdim=True)
return centred / torch.sqrt(variance + self.eps) * self.w + self.b""",
    "embed": "return self.W_E[tokens]",
    "pos-embed": """
pos = tokens.shape[-1]
return self.W_pos[offset : offset + pos].expand(tokens.shape[0], pos, -1)""",
    "attention": """
q = torch.einsum("bpm,hmd->bhpd", x, self.W_Q) + self.b_Q[:, None]
k = torch.einsum("bpm,hmd->bhpd", x, self.W_K) + self.b_K[:, None]
v = torch.einsum("bpm,hmd->bhpd", x, self.W_V) + self.b_V[:, None]
scores = q @ k.transpose(-1, -2) / self.d_head**0.5
hidden = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
scores = scores.masked_fill(hidden & self.causal, float("-inf"))
z = scores.softmax(dim=-1) @ v
return torch.einsum("bhpd,hdm->bpm", z, self.W_O) + self.b_O""",
    "mlp": """
pre = x @ self.W_in + self.b_in
post = 0.5 * pre * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (pre + 0.044715 * pre**3)))
return post @ self.W_out + self.b_out""",
    "block": """
resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
return resid_mid + self.mlp(self.ln2(resid_mid))""",
    "unembed": "return residual @ self.W_U + self.b_U",
    "decoder": """
x = self.embed(tokens) + self.pos_embed(tokens)
for block in self.blocks:
    x = block(x)
return self.unembed(self.ln_final(x))""",
    "loss": """
log_probs = logits[:, :-1].log_softmax(dim=-1)
return -log_probs.gather(-1, tokens[:, 1:, None]).mean()""",
}
SWAPS = [
    ("-1", "-2"), ("-1", "1"), ("-1", "0"), (" + ", " - "), (" + ", " * "), (" / ", " * "),
    ("@", "*"), ("mean", "sum"), ("softmax", "log_softmax"), ("(1)", "(0)"), (":-1", "1:"),
    ("0.5", "5"), ("**", "*"), ("x", "x.detach()"), ("dim=", "dim=0, keepdim="), ("[", "[0]["),
    ("tokens", "tokens.float()"), ("self.", "self.eps * self."),
]  # fmt: skip
RETURNS = [
    "None", "({},)", "({}).int()", "({}).detach()", "({})[..., :1]", "({}) * float('nan')",
    "({}).double()", "({}).unsqueeze(0)", "({}).sum()", "({}).tolist()", "({}).requires_grad_()",
    "({})[0]",
]  # fmt: skip
MUTANTS = 6


def _mutate(body: str, rng: random.Random) -> str:
    lines = body.strip().split("\n")
    for _ in range(rng.randint(1, 2)):
        kind = rng.random()
        if kind < 0.2:
            lines[rng.randrange(len(lines))] = "pass"
        elif kind < 0.4:
            *_, last = lines
            expression = last.removeprefix("return ")
            lines[-1] = "return " + rng.choice(RETURNS).format(expression)
        else:
            text = "\n".join(lines)
            old, new = rng.choice([s for s in SWAPS if s[0] in text] or SWAPS[:1])
            spots = [m.start() for m in re.finditer(re.escape(old), text)]
            if spots:
                at = rng.choice(spots)
                text = text[:at] + new + text[at + len(old) :]
            lines = text.split("\n")
    return "\n".join(lines)


def _learner_file(component: Component, body: str, folder: Path) -> str:
    """The exercise's starting file with ``body`` in place of ``raise NotImplementedError``."""
    assert main(["exercise", component.name, "--out", str(folder / component.template)]) == 0
    path = folder / component.template
    text = path.read_text()
    at = text.rindex("raise NotImplementedError")
    indent = " " * (at - text.rindex("\n", 0, at) - 1)
    code = "\n".join(indent + line for line in body.strip().split("\n")).lstrip()
    path.write_text(text[:at] + code + text[at + len("raise NotImplementedError") :])
    return f"{path}:{component.target}"


@pytest.mark.parametrize("component", COMPONENTS, ids=[c.name for c in COMPONENTS])
def test_the_completed_starting_file_passes(
    component: Component, tmp_path: Path, capsys: Capture
) -> None:
    target = _learner_file(component, SOLUTIONS[component.name], tmp_path)
    capsys.readouterr()
    assert main(["check", component.name, target, "--no-learning"]) == 0, capsys.readouterr()


OWN = {  # the decoder's starting file imports tfs's classes; a learner swaps in their own
    "from tfs_attention import MultiHeadAttention": "from attention import MultiHeadAttention",
    "from tfs_decoder import DecoderConfig, LayerNorm, ResidualBlock": (
        "from block import ResidualBlock\nfrom layernorm import LayerNorm\n"
        "from tfs_decoder import DecoderConfig"
    ),
    "from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed": (
        "from embed import Embed\nfrom pos_embed import LearnedPositionalEmbedding\n"
        "from unembed import Unembed"
    ),
    "from tfs_mlp import MLP": "from mlp import MLP",
}


def test_the_completed_files_make_a_decoder_that_reverses(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hilton's test of the mask on a decoder built from the learner's own classes, as the
    README's curriculum has it: it learns the reversed half and stays at chance on the
    first (the learning check)."""
    for component in COMPONENTS:
        monkeypatch.delitem(sys.modules, component.template.removesuffix(".py"), raising=False)
        _learner_file(component, SOLUTIONS[component.name], tmp_path)
    decoder = tmp_path / "decoder.py"
    text = decoder.read_text()
    for tfs_import, own in OWN.items():
        assert tfs_import in text
        text = text.replace(tfs_import, own)
    decoder.write_text(text)
    capsys.readouterr()
    status = main(["check", "decoder", f"{decoder}:Decoder"])
    report = capsys.readouterr().out
    assert status == 0, report
    assert "PASS  learning: sequence reversal" in report


@pytest.mark.parametrize("component", COMPONENTS, ids=[c.name for c in COMPONENTS])
def test_no_mutant_crashes_a_check(component: Component, tmp_path: Path, capsys: Capture) -> None:
    rng = random.Random(component.name)
    for n in range(MUTANTS):
        body = _mutate(SOLUTIONS[component.name], rng)
        folder = tmp_path / str(n)
        folder.mkdir()
        target = _learner_file(component, body, folder)
        capsys.readouterr()
        status = main(["check", component.name, target, "--no-learning"])
        out, err = capsys.readouterr()
        where = f"mutant {n} of {component.name}:\n{body}\n{out}{err}"
        assert status in (0, 1, 2), where
        assert "ERROR" not in out, where
        assert "Traceback" not in out + err, where
