"""Where a whole model differs from tfs's: the first sub-module whose input matches tfs's
while its output does not.

When a learner's decoder or block gives other outputs than tfs's under the same weights,
both run on the same input with forward hooks on the sub-modules the checks name by
tfs's parameter names: ``embed``, ``pos_embed``, ``blocks.{i}`` with its ``ln1``, ``attn``,
``ln2`` and ``mlp``, ``ln_final``, ``unembed`` (a block alone: ``ln1`` .. ``mlp``). The
records are walked in the order tfs's sub-modules finish, so a block comes after its
parts. A sub-module whose input differs only inherits the difference; the first whose
input matches and output differs is the culprit. An input that differs although
everything before it matched points between sub-modules instead: one never called, called
more often or in another order, or the sum that wires them (the residual stream).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tfs_core.checking import CheckFailed, max_difference

LOCATED = re.compile(
    r"embed|pos_embed|ln_final|unembed|blocks\.\d+|(blocks\.\d+\.)?(ln1|attn|ln2|mlp)"
)
"""The sub-modules compared, by full dotted name."""

COMPONENTS = {
    "embed": "embed",
    "pos_embed": "pos-embed",
    "ln1": "layernorm",
    "ln2": "layernorm",
    "ln_final": "layernorm",
    "attn": "attention",
    "mlp": "mlp",
    "unembed": "unembed",
    "block": "block",
}
"""Each sub-module's kind -> the ``tfs check`` component that checks it."""

EMBEDDINGS = "the residual stream x_0 = embed(tokens) + pos_embed(tokens)"
BLOCKS = "each block reads the one before's output: x_{i+1} = blocks[i](x_i)"
RESID_MID = "resid_mid = resid_pre + attn(ln1(resid_pre))"
RESID_POST = "resid_post = resid_mid + mlp(ln2(resid_mid))"
LOGITS = "logits = unembed(ln_final(x_n)), x_n the last block's output"
FORMULAS = {
    "embed": EMBEDDINGS,
    "pos_embed": EMBEDDINGS,
    "attn": RESID_MID,
    "ln2": RESID_MID,
    "mlp": RESID_POST,
    "block": RESID_POST,
    "ln_final": LOGITS,
    "unembed": LOGITS,
}
"""How tfs combines what reaches each kind of sub-module (``ln1``: see :func:`_feeding`)."""
AFTER = {"mlp": RESID_POST, "unembed": "the logits are unembed's output as it is"}
"""How tfs makes the model's output from its last sub-module."""


@dataclass
class _Run:
    """One forward: the hooked names in the order their calls finished, each call's first
    argument and output (detached copies), and the model's output."""

    order: list[str] = field(default_factory=list)
    calls: dict[str, list[tuple[object, object]]] = field(default_factory=dict)
    output: object = None


def first_difference(got: nn.Module, want: nn.Module, x: Tensor, tolerance: float) -> str | None:
    """One sentence saying where ``got`` (the learner's model, holding tfs's weights under
    tfs's names) first differs from tfs's ``want`` on the input ``x`` (tokens
    ``[batch, pos]`` for a decoder, ``[batch, pos, d_model]`` for a block), each output
    compared within ``tolerance``; ``None`` when nothing differs or the learner's forward
    raises (the checks report that themselves).
    """
    own = dict(got.named_modules())
    names = [name for name, _ in want.named_modules() if LOCATED.fullmatch(name)]
    missing = [name for name in names if name not in own]
    if missing:
        return f"could not compare sub-modules: your model has no {', '.join(missing)}"
    reference = _record(want, names, x)
    try:
        learner = _record(got, names, x)
    except Exception:  # the learner's code: the check that ran it first reports the error
        return None
    return _walk(learner, reference, own, tolerance)


@contextmanager
def locating(got: nn.Module, want: nn.Module, x: Tensor, tolerance: float) -> Iterator[None]:
    """A :class:`CheckFailed` raised inside gains :func:`first_difference`'s sentence."""
    try:
        yield
    except CheckFailed as failure:
        where = first_difference(got, want, x, tolerance)
        if where is None:
            raise
        raise CheckFailed(f"{failure} — {where}") from None


def _record(model: nn.Module, names: list[str], x: Tensor) -> _Run:
    run = _Run()
    modules = dict(model.named_modules())

    def recorder(name: str) -> Any:
        def record(module: nn.Module, args: Any, kwargs: Any, output: object) -> None:
            first = args[0] if args else next(iter(kwargs.values()), None)
            run.calls.setdefault(name, []).append((_copy(first), _copy(output)))
            run.order.append(name)

        return record

    handles: list[RemovableHandle] = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(recorder(name), with_kwargs=True))
        with torch.no_grad():
            run.output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return run


def _copy(value: object) -> object:
    """A tensor detached and cloned: the model may change it in place after the hook."""
    return value.detach().clone() if isinstance(value, Tensor) else value


def _walk(got: _Run, want: _Run, own: dict[str, nn.Module], tolerance: float) -> str | None:
    """The sentence for the learner's run ``got`` against tfs's ``want``, walked in tfs's
    order (``own``: the learner's modules by name)."""
    matched: list[str] = []
    # Called in tfs's model, not in the learner's, and no later input has matched since:
    # one of them may be what is missing. (A module without a forward, such as an
    # nn.ParameterDict whose weights are used directly, is never called by design.)
    unseen: list[str] = []
    for name in want.order:
        calls = got.calls.get(name, [])
        if not calls:
            if type(own[name]).forward is not nn.Module.forward:
                unseen.append(name)
            continue
        if len(calls) != len(want.calls[name]):
            times = _times(len(calls)), _times(len(want.calls[name]))
            return f"{name} ran {times[0]} in one forward; tfs's runs it {times[1]}"
        (got_in, got_out), (want_in, want_out) = calls[0], want.calls[name][0]
        # Integer inputs are the tokens themselves, the same on both sides.
        floating = isinstance(want_in, Tensor) and want_in.is_floating_point()
        if floating and not _agree(got_in, want_in, tolerance):
            if unseen:
                return f"{unseen[0]} was never called: {_feeding(unseen[0])}"
            return _out_of_order(name, got.order, want.order) or _wiring(name, matched)
        unseen.clear()
        if not _agree(got_out, want_out, tolerance):
            return _culprit(name, matched, own[name])
        matched.append(name)
    if _agree(got.output, want.output, tolerance):
        return None
    if unseen:
        return f"{unseen[0]} was never called: {_feeding(unseen[0])}"
    if not matched:
        return None
    return (
        f"every sub-module's output matches tfs's ({_summary(matched)}), so the difference "
        f"is in how they are combined: {AFTER[_kind(want.order[-1])]}"
    )


def _agree(got: object, want: object, tolerance: float) -> bool:
    """``got`` is a tensor equal to ``want`` within ``tolerance``, once broadcast to its
    shape (a positional embedding ``[pos, d_model]`` is added as one ``[batch, pos, d_model]``)."""
    if not isinstance(got, Tensor) or not isinstance(want, Tensor):
        return False
    if got.shape != want.shape:
        pairs = zip(reversed(got.shape), reversed(want.shape), strict=False)
        if got.ndim > want.ndim or any(g not in (1, w) for g, w in pairs):
            return False
        got = got.expand_as(want)
    return max_difference(got, want, "") <= tolerance


def _kind(name: str) -> str:
    last = name.rpartition(".")[2]
    return "block" if last.isdigit() else last


def _block(name: str) -> str:
    """``blocks.{i}`` for a name inside block ``i`` (or the block itself); else ``name``."""
    match = re.match(r"blocks\.\d+", name)
    return match.group() if match else name


def _feeding(name: str) -> str:
    """How tfs combines what reaches the sub-module ``name``."""
    if _kind(name) == "ln1" and name == "ln1":
        return RESID_MID  # a block alone: ln1 reads resid_pre itself
    if _kind(name) in ("ln1", "block"):
        return EMBEDDINGS if _block(name) == "blocks.0" else BLOCKS
    return FORMULAS[_kind(name)]


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _shown(matched: list[str]) -> list[str]:
    """The matched names, a block's parts folded into the block, embed and pos_embed into
    'the embeddings'."""
    shown = [name for name in matched if _block(name) == name or _block(name) not in matched]
    if "embed" in shown and "pos_embed" in shown:
        shown = ["the embeddings", *(n for n in shown if n not in ("embed", "pos_embed"))]
    return shown


def _summary(matched: list[str]) -> str:
    shown = _shown(matched)
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def _match(matched: list[str]) -> str:
    """'a, b and c match', 'a matches'."""
    plural = len(_shown(matched)) > 1 or _shown(matched) == ["the embeddings"]
    return f"{_summary(matched)} {'match' if plural else 'matches'}"


def _out_of_order(name: str, got: list[str], want: list[str]) -> str | None:
    """The first sub-module that ran on the other side of ``name`` than in tfs's model,
    named by its block when the two are in different blocks."""
    rank = {other: i for i, other in enumerate(want)}
    at = got.index(name)
    for i, other in enumerate(got):
        if other != name and other in rank and (i < at) != (rank[other] < rank[name]):
            first, then = (other, name) if i < at else (name, other)
            if _block(first) != _block(then):
                first, then = _block(first), _block(then)
            return f"{first} ran before {then}, but tfs's runs {then} first"
    return None


def _wiring(name: str, matched: list[str]) -> str:
    if not matched:
        return (
            f"the input of {name} differs from tfs's and no sub-module before it could be "
            f"compared: {_feeding(name)}"
        )
    return (
        f"the input of {name} differs from tfs's though {_match(matched)}, so the "
        f"difference is in how they are combined: {_feeding(name)}"
    )


def _culprit(name: str, matched: list[str], module: nn.Module) -> str:
    parts = [part for part in matched if part.startswith(f"{name}.")]
    run = f"run `tfs check {COMPONENTS[_kind(name)]}` on your {type(module).__name__}"
    if parts:
        return (
            f"{name} differs though its {_match([p.rpartition('.')[2] for p in parts])} "
            f"tfs's, so the difference is in how it combines them: "
            f"{FORMULAS['block']} ({run})"
        )
    seen = _match(matched) if matched else "its input matches tfs's"
    return f"{name} differs ({seen}): {run}"
