"""The checks tfs's ResidualBlock passes, runnable on any residual block class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_attention.checks import fetch_accuracy
from tfs_core.checking import (
    Catalogue,
    Check,
    CheckFailed,
    Contract,
    Report,
    Subject,
    check_dtypes,
    check_gradients,
    check_same,
    expect_shape,
    max_difference,
    output,
    random_weights,
    run_checks,
)
from tfs_decoder.block import ResidualBlock
from tfs_decoder.checks import block_mistakes
from tfs_decoder.checks._common import parameter_shapes
from tfs_decoder.checks.locate import locating
from tfs_decoder.layernorm import layer_norm_formula
from tfs_mlp import MLP

D_MODEL, N_HEADS, D_MLP, POS, EPS = 16, 2, 32, 5, 1e-5
TOLERANCE = 1e-5
"""float32: outputs up to about 4 from an independently written block agree with tfs's to
about 1e-6."""


def _parts() -> dict[str, Any]:
    """Fresh sublayers for every block built: tfs's attention and MLP."""
    return {
        "d_model": D_MODEL,
        "attn": MultiHeadAttention(D_MODEL, N_HEADS),
        "mlp": MLP(D_MODEL, D_MLP),
    }


CONTRACT = Contract(
    signature="ResidualBlock(d_model, attn, mlp, *, eps=1e-5)",
    kwargs=_parts,
    params=parameter_shapes(lambda: ResidualBlock(**_parts())),
)
NORMS = ("ln1.w", "ln1.b", "ln2.w", "ln2.b")


class Writes(nn.Module):
    """A stand-in sublayer: keeps what it reads and writes a fixed tensor."""

    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = value
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        self.seen.append(x.detach().clone())
        return self.value.clone()


def _weights(seed: int = 0) -> dict[str, Tensor]:
    return random_weights(CONTRACT.params, seed)


def _x(seed: int = 1, batch: int = 2) -> Tensor:
    return torch.randn(batch, POS, D_MODEL, generator=torch.Generator().manual_seed(seed))


def _run(module: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return output(module(x)).detach()


def _reference(weights: dict[str, Tensor]) -> ResidualBlock:
    reference = ResidualBlock(**_parts())
    reference.load_state_dict(weights)
    return reference


def _shapes(subject: Subject) -> None:
    x = _x()
    expect_shape(_run(subject.build(), x), x.shape, "output for x [batch, pos, d_model]")
    check_dtypes(subject, lambda module, dtype: module(x.to(dtype)))


def _same_as_tfs(subject: Subject) -> None:
    weights, x = _weights(), _x()
    module, reference = subject.load(subject.build(), weights), _reference(weights)
    with locating(module, reference, x, TOLERANCE):
        check_same(_run(module, x), reference(x), TOLERANCE)


def _with_sublayers(
    subject: Subject, attn: Writes, mlp: Writes, norms: dict[str, Tensor]
) -> nn.Module:
    """The block with stand-in sublayers, and the LayerNorm weights ``norms`` when the
    parameters are named as tfs's (else the class's own)."""
    module = subject.build(attn=attn, mlp=mlp)
    if subject.named_as_tfs:
        subject.load(module, norms)
    return module


def _residual(subject: Subject) -> None:
    """Sublayers that write zeros leave only the residual stream: the block returns ``x``.
    ``x`` has rows of mean 0 and variance 1 and the LayerNorms are the identity, so a
    post-LayerNorm block returns ``x`` too (that order is the 'pre-LayerNorm' check's)."""
    x = _x()
    x = layer_norm_formula(x, torch.ones(D_MODEL), torch.zeros(D_MODEL), 0.0)
    identity = {
        name: torch.ones(D_MODEL) if name.endswith("w") else torch.zeros(D_MODEL) for name in NORMS
    }
    zeros = torch.zeros_like(x)
    out = _run(_with_sublayers(subject, Writes(zeros), Writes(zeros), identity), x)
    off = max_difference(out, x, "output")
    if off <= 1e-4:
        return
    gen = torch.Generator().manual_seed(5)
    a, m = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    out = _run(_with_sublayers(subject, Writes(a), Writes(m), identity), x)
    if max_difference(out, m, "output") <= 1e-4:
        seen = ", and with sublayers writing fixed tensors a and m it returned m alone"
        advice = (
            "add the MLP's output to the residual stream: "
            "resid_post = resid_mid + mlp(ln2(resid_mid))"
        )
    elif max_difference(out, a + m, "output") <= 1e-4:
        seen = ", and with sublayers writing fixed tensors a and m it returned a + m, not x + a + m"
        advice = "add the attention's output to the residual stream: resid_mid = x + attn(ln1(x))"
    else:
        seen = ""
        advice = (
            "each sublayer adds its output to the residual stream: "
            "resid_mid = x + attn(ln1(x)), resid_post = resid_mid + mlp(ln2(resid_mid))"
        )
    raise CheckFailed(
        f"with attention and MLP sublayers that write zeros the block should return its "
        f"input x, but it is off by up to {off:.3g}{seen} — {advice}"
    )


def _layernorm(x: Tensor, weights: dict[str, Tensor], which: str) -> Tensor:
    return layer_norm_formula(x, weights[f"{which}.w"], weights[f"{which}.b"], EPS)


def _which_input(got: Tensor, candidates: dict[str, Tensor]) -> str:
    """The name of the candidate ``got`` equals; else how far it is from the first one."""
    for name, value in candidates.items():
        if max_difference(got, value, "sublayer input") <= 1e-4:
            return name
    first, value = next(iter(candidates.items()))
    return f"something else (off from {first} by up to {max_difference(got, value, ''):.3g})"


def _pre_layernorm(subject: Subject) -> None:
    """Stand-in sublayers record what they read: the attention must read ``ln1(x)`` and the
    MLP ``ln2(x + a)``, where ``a`` is what the attention wrote."""
    weights, x = _weights(), _x()
    a = torch.randn(x.shape, generator=torch.Generator().manual_seed(6))
    attn, mlp = Writes(a), Writes(torch.zeros_like(x))
    _run(_with_sublayers(subject, attn, mlp, {n: weights[n] for n in NORMS}), x)
    for sublayer, name in ((attn, "attention"), (mlp, "MLP")):
        if len(sublayer.seen) != 1:
            raise CheckFailed(
                f"the {name} was called {len(sublayer.seen)} times for one forward — call "
                f"self.{'attn' if name == 'attention' else 'mlp'} once"
            )
    mid = x + a
    read = _which_input(
        attn.seen[0],
        {
            "ln1(x)": _layernorm(x, weights, "ln1"),
            "x itself": x,
            "ln2(x)": _layernorm(x, weights, "ln2"),
        },
    )
    if read != "ln1(x)":
        raise CheckFailed(
            f"the attention read {read}, not ln1(x) — normalise "
            f"what each sublayer reads: attn(ln1(x)), then mlp(ln2(resid_mid)) (pre-LayerNorm, "
            f"as GPT-2; the sum stays un-normalised)"
        )
    read = _which_input(
        mlp.seen[0],
        {
            "ln2(resid_mid)": _layernorm(mid, weights, "ln2"),
            "resid_mid itself": mid,
            "ln1(resid_mid)": _layernorm(mid, weights, "ln1"),
            "ln2(x), the input before the attention added to it": _layernorm(x, weights, "ln2"),
            # Pre-LayerNorm without the attention's residual: the 'residual' check's.
            "ln2(attn_out)": _layernorm(a, weights, "ln2"),
        },
    )
    if read not in ("ln2(resid_mid)", "ln2(attn_out)"):
        raise CheckFailed(
            f"the MLP read {read}, not ln2(resid_mid) with resid_mid = x "
            f"+ attn_out — the MLP reads the second LayerNorm of the stream after the "
            f"attention has added to it: mlp(ln2(resid_mid))"
        )


def _gradients(subject: Subject) -> None:
    check_gradients(subject, _weights(), lambda: ResidualBlock(**_parts()), _x(), 1e-4)


def _learning(subject: Subject) -> None:
    """tfs_attention's fetch task through a whole block (d_model 16, tfs's attention with 2
    heads and MLP 32): tfs's block fetches 100% on seeds 0-5, the readout alone 12%;
    about 0.3 s on one thread."""
    accuracy = fetch_accuracy(subject.build, seed=0)
    if not accuracy >= 0.95:
        raise CheckFailed(
            f"after 80 steps one block fetches the flagged value for {accuracy:.1%} of "
            f"sequences (tfs's: 100%, chance 12.5%; needed 95%) — its attention's output "
            f"does not reach the residual stream as it should"
        )


CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _shapes),
    ("same as tfs", _same_as_tfs),
    ("residual", _residual),
    ("pre-LayerNorm", _pre_layernorm),
    ("gradients", _gradients),
]
LEARNING: list[tuple[str, Check]] = [("learning: moving information", _learning)]
CATALOGUE = Catalogue(
    correct=block_mistakes.Block,
    mistakes=block_mistakes.MISTAKES,
    probes=lambda: [(_weights(seed), (_x(seed + 1),)) for seed in (0, 2)],
)


def check_block(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's residual block checks on ``cls``, built as ``cls(d_model=16, attn=attn,
    mlp=mlp)`` with tfs's ``MultiHeadAttention(16, 2)`` and ``MLP(16, 32)``.

    The checks: parameter names and shapes (``ln1.w``, ``ln1.b``, ``attn.W_Q``, ...,
    ``ln2.w``, ``ln2.b``, ``mlp.W_in``, ...: the block keeps its sublayers as ``attn`` and
    ``mlp``); shapes and dtypes; the output equal to tfs's ``ResidualBlock`` under the same
    weights (within 1e-5, float32); the residual stream (with sublayers that write zeros
    the block returns its input); pre-LayerNorm order (the attention reads ``ln1(x)``, the
    MLP ``ln2(x + attn_out)``); gradients equal to tfs's; and, unless ``learning=False``,
    the learning check: one block learns to move a value between positions (under 1 s).
    """
    checks = CHECKS + (LEARNING if learning else [])
    return run_checks("block", cls, CONTRACT, checks, catalogue=CATALOGUE)
