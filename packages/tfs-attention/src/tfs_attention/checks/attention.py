"""The checks of multi-head attention: :func:`check_attention`.

``check_attention(MyAttention)`` builds the class as tfs builds its own
(``MyAttention(d_model=32, n_heads=2)``), expects tfs's parameter names and shapes, and
returns a :class:`Report`: one line per check, and for each failure one sentence that
names the concept with the evidence. Use it in a pytest test with
``assert report.ok, str(report)``, or from the shell with ``tfs check attention FILE:CLASS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tfs_attention.attention import MultiHeadAttention
from tfs_attention.checks.attention_mistakes import MISTAKES, Attention
from tfs_attention.checks.tasks import fetch_accuracy
from tfs_core.checking import (
    Catalogue,
    Check,
    CheckFailed,
    Contract,
    Report,
    Subject,
    check_dtypes,
    check_every_parameter_used,
    check_gradients,
    check_resized,
    check_same,
    expect_shape,
    max_difference,
    module_for_probes,
    output,
    random_weights,
    run_checks,
)

__all__ = ["check_attention"]

D_MODEL, N_HEADS, D_HEAD, POS = 32, 2, 16, 6
TOLERANCE = 1e-5
"""float32: tfs's own fast path and its plain formula agree to about 1e-6 here."""

CONTRACT = Contract(
    signature="MultiHeadAttention(d_model, n_heads, d_head=None, causal=True)",
    kwargs=lambda: {"d_model": D_MODEL, "n_heads": N_HEADS},
    params={
        "W_Q": (N_HEADS, D_MODEL, D_HEAD),
        "W_K": (N_HEADS, D_MODEL, D_HEAD),
        "W_V": (N_HEADS, D_MODEL, D_HEAD),
        "W_O": (N_HEADS, D_HEAD, D_MODEL),
        "b_Q": (N_HEADS, D_HEAD),
        "b_K": (N_HEADS, D_HEAD),
        "b_V": (N_HEADS, D_HEAD),
        "b_O": (D_MODEL,),
    },
)


def _weights(seed: int = 0) -> dict[str, Tensor]:
    """Random weights and biases large enough that attention patterns are far from uniform."""
    return random_weights(CONTRACT.params, seed)


def _x(seed: int = 1, batch: int = 2) -> Tensor:
    return torch.randn(batch, POS, D_MODEL, generator=torch.Generator().manual_seed(seed))


def _run(module: nn.Module, x: Tensor) -> Tensor:
    """The output, detached: the probes read numbers from it, never a gradient."""
    return output(module(x)).detach()


def _reference(weights: dict[str, Tensor]) -> MultiHeadAttention:
    reference = MultiHeadAttention(D_MODEL, N_HEADS)
    reference.load_state_dict(weights)
    return reference


def _shapes(subject: Subject) -> None:
    x = _x()
    expect_shape(_run(subject.build(), x), x.shape, "output for x [batch, pos, d_model]")
    check_dtypes(subject, lambda module, dtype: module(x.to(dtype)))
    wide = subject.build(n_heads=4, d_head=4)
    expect_shape(_run(wide, x), x.shape, "output with n_heads=4, d_head=4")
    check_resized(subject, wide, "W_Q", (4, D_MODEL, 4), "n_heads=4, d_head=4")


def _same_as_tfs(subject: Subject) -> None:
    """Under tfs's sizes, and with ``d_head`` given apart from ``d_model / n_heads`` (where
    a scale or a reshape computed from ``d_model`` shows)."""
    weights, x = _weights(), _x()
    got = _run(subject.load(subject.build(), weights), x)
    check_same(got, _reference(weights)(x), TOLERANCE)
    reference = MultiHeadAttention(D_MODEL, n_heads=4, d_head=4)
    weights = random_weights({n: tuple(w.shape) for n, w in reference.named_parameters()}, 1)
    reference.load_state_dict(weights)
    got = _run(subject.load(subject.build(n_heads=4, d_head=4), weights), x)
    check_same(got, reference(x), TOLERANCE, "with n_heads=4, d_head=4 the output")


def _values_and_heads(subject: Subject) -> None:
    """At one position each head's pattern is ``[[1]]``, whatever the scores, mask or
    softmax axis: the output is ``sum_h (x W_V[h] + b_V[h]) W_O[h] + b_O``."""
    weights, x = _weights(), _x()[:, :1]
    with torch.no_grad():
        got = _run(subject.load(subject.build(), weights), x)
    expect_shape(got, x.shape, "output for one position")
    if not bool(got.isfinite().all()):
        raise CheckFailed(
            "with one position the output is not finite — a position must attend at least "
            "to itself (hide only sources after the destination)"
        )
    plain = Attention(weights)
    want = plain.out(plain.project(x, "V"))
    difference = max_difference(got, want, "output")
    if not difference <= TOLERANCE:
        raise CheckFailed(
            f"with one position each head can attend only to it, so the output should be "
            f"sum_h (x W_V[h] + b_V[h]) W_O[h] + b_O; off by {difference:.3g} — values come "
            f"from W_V and b_V, each head's z goes through its own W_O[h], the heads are "
            f"summed and b_O is added once"
        )


def _changed_positions(module: nn.Module, x: Tensor, source: int) -> Tensor:
    """How much the output at each position moves when the input at ``source`` does."""
    nudged = x.clone()
    nudged[:, source] += torch.randn(
        x.shape[0], D_MODEL, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        before, after = _run(module, x), _run(module, nudged)
    expect_shape(before, x.shape, "output")
    return (after - before).abs().amax(dim=(0, 2)).nan_to_num(math.inf)


def _causal_mask(subject: Subject) -> None:
    module, x = module_for_probes(subject, _weights()), _x()
    with torch.no_grad():
        out = _run(module, x)
    expect_shape(out, x.shape, "output")
    bad = (~out.isfinite()).any(dim=(0, 2)).nonzero()
    if len(bad):
        raise CheckFailed(
            f"the output at position {int(bad[0])} is not finite — a position "
            f"must attend at least to itself (hide only sources after the destination)"
        )
    changes = [_changed_positions(module, x, source) for source in range(POS)]
    for source, change in enumerate(changes):
        if not change[source] > 1e-6:
            raise CheckFailed(
                f"the output at position {source} did not change when the "
                f"input at position {source} changed — a position must attend to itself "
                f"(hide only src > dest, e.g. triu(diagonal=1))"
            )
    for source, change in enumerate(changes):
        leaked = (change[:source] > 1e-6).nonzero()
        if len(leaked):
            raise CheckFailed(
                f"the output at position {int(leaked[0])} changed when the input "
                f"at position {source} changed — future positions leak into the past"
            )


def _not_causal(subject: Subject) -> None:
    module = module_for_probes(subject, _weights(), causal=False)
    change = _changed_positions(module, _x(), POS - 1)
    if not change[0] > 1e-6:
        raise CheckFailed(
            f"the output at position 0 did not change when the input at "
            f"position {POS - 1} changed — without the causal mask every position attends "
            f"to every position"
        )


def _scale(subject: Subject) -> None:
    """Head 0 scores source 1 ``a`` and source 0 zero at destination 1, and copies a value
    that is 1 at source 1 and 0 at source 0: its output is ``sigmoid(a * scale)``."""
    weights = {name: torch.zeros(shape) for name, shape in CONTRACT.params.items()}
    a = 4.0
    weights["b_Q"][0, 0] = a  # q = a e_0 at every destination
    weights["W_K"][0, 0, 0] = 1.0  # k = x[0] e_0
    weights["W_V"][0, 1, 0] = 1.0  # v = x[1] e_0
    weights["W_O"][0, 0, 0] = 1.0  # out[0] = z[0] of head 0
    x = torch.zeros(1, 2, D_MODEL)
    x[0, 1, :2] = 1.0
    with torch.no_grad():
        out = _run(subject.load(subject.build(), weights), x)
    expect_shape(out, x.shape, "output")
    weight = float(out[0, 1, 0])
    if not 0.0 < weight < 1.0:
        raise CheckFailed(
            f"a destination choosing between two sources gave weight {weight:.4g}, "
            f"which no softmax over two scores gives (see the other checks)"
        )
    measured = math.log(weight / (1.0 - weight)) / a
    expected = 1.0 / math.sqrt(D_HEAD)
    if not measured > 1e-3 * expected:
        raise CheckFailed(
            f"a source whose key matches the query got weight {weight:.4g} against one "
            f"whose key does not, so the scores do not follow q_dest . k_src — score "
            f"scores[dest, src] = q_dest . k_src / sqrt(d_head): q @ k^T, not k @ q^T"
        )
    if abs(measured / expected - 1.0) > 1e-3:
        guess = {1.0 / D_HEAD: "d_head", 1.0 / math.sqrt(D_MODEL): "sqrt(d_model)", 1.0: "1"}
        named = [
            f", as if divided by {v}" for k, v in guess.items() if abs(measured / k - 1) < 1e-3
        ]
        size = (
            f"{expected / measured:.1f}x too small"
            if measured < expected
            else (f"{measured / expected:.1f}x too large")
        )
        raise CheckFailed(
            f"attention scores are {size} (scaled by {measured:.4g}"
            f"{''.join(named)}) — divide q k^T by sqrt(d_head) = {math.sqrt(D_HEAD):g}"
        )


def _softmax_axis(subject: Subject) -> None:
    """With ``W_V = 0`` every value is ``b_V``; rows of the pattern summing to one over
    sources make every destination's ``z`` equal to ``b_V``. W_O copies z out unchanged."""
    weights = _weights()
    weights["W_V"].zero_()
    weights["b_O"].zero_()
    weights["W_O"] = torch.eye(D_MODEL).reshape(N_HEADS, D_HEAD, D_MODEL)
    with torch.no_grad():
        out = _run(subject.load(subject.build(), weights), _x())
    expect_shape(out, (2, POS, D_MODEL), "output")
    value = weights["b_V"].reshape(-1).double()
    share = (out.double() @ value) / (value @ value)  # [batch, pos]: how many b_V each position got
    worst = (share - 1).abs().amax(dim=0).nan_to_num(math.inf)
    if not float(worst.max()) < 1e-4:
        at = int(worst.argmax())
        raise CheckFailed(
            f"with every value vector equal to b_V, position {at} should "
            f"output exactly b_V (each pattern row sums to 1), got "
            f"{float(share[:, at].mean()):.3g}x b_V — take the softmax over source "
            f"positions (the key axis, the last one)"
        )


def _keys_and_values(subject: Subject) -> None:
    """With ``W_K = b_K = 0`` every score is zero: each destination averages the values
    ``x W_V + b_V`` of the sources it may see."""
    weights = _weights()
    weights["W_K"].zero_()
    weights["b_K"].zero_()
    x = _x()
    with torch.no_grad():
        got = _run(subject.load(subject.build(), weights), x)
        plain = Attention(weights)
        mean = plain.project(x, "V").cumsum(dim=2) / torch.arange(1, POS + 1)[:, None]
        want = plain.out(mean)
    difference = max_difference(got, want, "output")
    if not difference <= TOLERANCE:
        raise CheckFailed(
            f"with W_K = 0 every visible source gets equal attention, so "
            f"each position should output the mean of x W_V + b_V so far (times W_O, plus "
            f"b_O); off by {difference:.3g} — keys come from W_K, b_K and values from W_V, b_V"
        )


def _every_parameter_used(subject: Subject) -> None:
    # b_K adds q . b_K to every score of a destination alike, which softmax cancels: it
    # cannot change the output, in tfs's attention or any other.
    module, x = subject.load(subject.build(), _weights()), _x()
    names = [name for name in CONTRACT.params if name != "b_K"]
    check_every_parameter_used(module, lambda: module(x), names)


def _gradients(subject: Subject) -> None:
    check_gradients(subject, _weights(), lambda: MultiHeadAttention(D_MODEL, N_HEADS), _x(), 1e-4)


def _learning(subject: Subject) -> None:
    accuracy = fetch_accuracy(lambda: subject.build(d_model=16, n_heads=2), seed=0)
    if not accuracy >= 0.95:
        raise CheckFailed(
            f"after 80 steps one attention layer fetches the flagged value for "
            f"{accuracy:.1%} of sequences (tfs's: 100%, chance 12.5%; needed 95%) — it does "
            f"not move information between positions as it should"
        )


CHECKS: list[tuple[str, Check]] = [
    ("shapes and dtypes", _shapes),
    ("same as tfs", _same_as_tfs),
    ("values and heads", _values_and_heads),
    ("causal mask", _causal_mask),
    ("causal=False", _not_causal),
    ("softmax axis", _softmax_axis),
    ("scale", _scale),
    ("keys and values", _keys_and_values),
    ("every weight and bias used", _every_parameter_used),
    ("gradients", _gradients),
]
LEARNING: list[tuple[str, Check]] = [("learning: moving information", _learning)]
# Each probe reads its concept through the others: a failure there would name the wrong one.
NEEDS = {
    "softmax axis": ["values and heads"],
    "scale": ["values and heads", "causal mask", "softmax axis"],
    "keys and values": ["values and heads", "causal mask", "softmax axis"],
}
CATALOGUE = Catalogue(
    correct=Attention,
    mistakes=MISTAKES,
    probes=lambda: [(_weights(seed), (_x(seed + 1),)) for seed in (0, 2)],
)


def check_attention(cls: Callable[..., nn.Module], *, learning: bool = True) -> Report:
    """Run tfs's attention checks on ``cls``, built as ``cls(d_model=32, n_heads=2)``.

    The checks: parameter names and shapes (``W_Q/W_K/W_V [head, d_model, d_head]``,
    ``W_O [head, d_head, d_model]``, ``b_Q/b_K/b_V [head, d_head]``, ``b_O [d_model]``);
    shapes and dtypes; the output equal to tfs's ``MultiHeadAttention`` under the same
    weights (within 1e-5, float32); values and heads (at one position the output is
    ``sum_h (x W_V[h] + b_V[h]) W_O[h] + b_O``); the causal mask (no future source changes
    a destination, every destination sees itself) and ``causal=False``; the softmax axis;
    the ``1/sqrt(d_head)`` scale; keys and values from their own weights; every weight and
    bias used; gradients equal to tfs's; and, unless ``learning=False``, the learning
    check: a layer that must move a value between positions learns to (about 1 s).

    A check that reads its concept through another is skipped when that one failed
    (``SKIP  scale (depends on: softmax axis)``). When the class computes one of the known
    mistakes of :mod:`tfs_attention.checks.attention_mistakes` under tfs's weights, the
    report's first line after the header names it: ``MISTAKE  the heads' outputs are
    averaged; ...``.
    """
    checks = CHECKS + (LEARNING if learning else [])
    return run_checks("attention", cls, CONTRACT, checks, needs=NEEDS, catalogue=CATALOGUE)
