"""Running a component's checks on someone else's class: the report, the runner, and the
contract (constructor keywords, parameter names and shapes) a class must meet.

Every package's ``checks`` builds on it, so a report is one :class:`Report` whichever
component it checks.
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

MARKS = {"pass": "PASS", "fail": "FAIL", "todo": "TODO", "not run": "SKIP", "error": "ERROR"}


class CheckFailed(Exception):
    """Raised by a check: one sentence that names the concept, with the evidence."""


class NotRun(Exception):
    """Raised by a check that cannot run on this class; the message says why."""


class Unmet(Exception):
    """Raised by a check whose evidence would mislead because the checks it names failed."""

    def __init__(self, *depends: str) -> None:
        super().__init__(", ".join(depends))
        self.depends = depends


class LearnerError(Exception):
    """The checked class's own code raised ``error`` (its constructor or forward)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, ``status`` (``"pass"``, ``"fail"``, ``"todo"`` for code that
    still raises ``NotImplementedError``, ``"not run"``, ``"error"`` for a bug in the
    check itself) and, unless it passed, why. ``depends`` names the failed checks that
    kept it from running."""

    name: str
    status: str
    message: str = ""
    depends: tuple[str, ...] = ()

    def __str__(self) -> str:
        line = f"{MARKS[self.status]}  {self.name}"
        if self.depends:
            return f"{line} (depends on: {', '.join(self.depends)})"
        return f"{line}: {self.message}" if self.message else line


class Formula:
    """A component's formula in plain tensor steps, built from tfs's weights and called
    with the inputs its module takes: ``Formula(weights)(x)``. A known mistake subclasses
    it and overrides one step; ``says`` names the mistake and ``fix`` gives the right
    formula, as a report's MISTAKE line shows them."""

    says: ClassVar[str] = ""
    fix: ClassVar[str] = ""

    def __init__(self, weights: Mapping[str, Tensor]) -> None:
        self.w = dict(weights)

    def __call__(self, *inputs: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Catalogue:
    """Known mistakes of one component and the probes that tell them apart.

    ``probes()`` gives ``(weights, inputs)`` pairs; a mistake is named when, on every
    probe, the checked class under those weights computes what the mistake's formula
    computes (within ``tolerance``, relative to the output's size) and not what
    ``correct`` computes.
    """

    correct: type[Formula]
    mistakes: Sequence[type[Formula]]
    probes: Callable[[], Sequence[tuple[Mapping[str, Tensor], tuple[Tensor, ...]]]]
    tolerance: float = 1e-4

    def outputs(self, formula: type[Formula]) -> list[Tensor]:
        with torch.no_grad():
            return [formula(weights)(*inputs) for weights, inputs in self.probes()]


@dataclass
class Report:
    """What the checks of one component found in one class.

    ``ok`` is true when the class could be built and every check passed; ``str(report)``
    is one line per check. ``construction_error`` is set when the class could not be
    built with tfs's constructor keywords, and then no check ran. ``mistake`` is the known
    mistake (a :class:`Formula`) the class computes under tfs's weights, if one matched:
    ``str(report)`` names it, with its fix, on the line after the header.
    """

    component: str
    target: str
    results: list[CheckResult] = field(default_factory=list)
    construction_error: str | None = None
    mistake: type[Formula] | None = None

    @property
    def ok(self) -> bool:
        return self.construction_error is None and all(r.status == "pass" for r in self.results)

    @property
    def failures(self) -> dict[str, str]:
        """The checks that failed: name -> message."""
        return {r.name: r.message for r in self.results if r.status == "fail"}

    def __str__(self) -> str:
        head = f"{self.component} checks on {self.target}"
        if self.construction_error is not None:
            return f"{head}: could not build it\n{self.construction_error}"
        passed = sum(r.status == "pass" for r in self.results)
        named = [f"MISTAKE  {self.mistake.says}; {self.mistake.fix}"] if self.mistake else []
        lines = [head, *named, *(str(r) for r in self.results)]
        lines.append(f"{passed} of {len(self.results)} checks passed")
        return "\n".join(lines)


@dataclass(frozen=True)
class Contract:
    """How tfs builds a component and names its weights.

    ``signature`` is shown in messages (``"MultiHeadAttention(d_model, n_heads, d_head=None,
    causal=True)"``); ``kwargs`` gives the keywords of the checked instance (a function, so
    that keywords that are modules are fresh for every instance); ``params`` are the
    expected parameter names and shapes of that instance.
    """

    signature: str
    kwargs: Callable[[], Mapping[str, Any]]
    params: Mapping[str, tuple[int, ...]]


Check = Callable[["Subject"], None]


class Subject:
    """The class under check, built the way tfs builds its own component."""

    def __init__(self, cls: Callable[..., Any], contract: Contract | None) -> None:
        self.cls = cls
        self.contract = contract
        self.file = source_file(cls)
        self.named_as_tfs = False
        self.raised: dict[tuple[object, ...], str] = {}  # an error of theirs -> where seen first

    def build(self, **overrides: Any) -> nn.Module:
        """A fresh instance from the contract's keywords (with ``overrides``), seeded. An
        exception from the class's own code (constructor or forward) comes out as a
        :class:`LearnerError`."""
        assert self.contract is not None, "a function target is called, not built"
        torch.manual_seed(0)
        module = self.call(**{**self.contract.kwargs(), **overrides})
        if not isinstance(module, nn.Module):
            raise CheckFailed(f"construction: expected an nn.Module, got {type(module).__name__}")
        forward = module.forward

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return _theirs(forward, *args, **kwargs)

        module.forward = guarded
        return module

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """``cls(*args, **kwargs)``, its exceptions wrapped as :class:`LearnerError`."""
        return _theirs(self.cls, *args, **kwargs)

    def load(self, module: nn.Module, weights: Mapping[str, Tensor]) -> nn.Module:
        """Copy ``weights`` into the parameters of the same names; not run without them."""
        if not self.named_as_tfs:
            raise NotRun("needs the parameters named and shaped as tfs's (see 'parameters')")
        own = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                if own[name].shape != value.shape:
                    raise CheckFailed(
                        f"{name} has shape {list(own[name].shape)} where tfs's has "
                        f"{list(value.shape)} — use the sizes the constructor is given"
                    )
                own[name].copy_(value)
        return module


def _theirs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, LearnerError, CheckFailed, NotRun, Unmet):
        raise
    except Exception as error:
        raise LearnerError(error) from error


def output(value: object, what: str = "forward") -> Tensor:
    """``value`` if it is a floating-point tensor, else a failed check that says what came
    back."""
    if not isinstance(value, Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise CheckFailed(f"{what}: expected a floating-point tensor, got {value.dtype}")
    return value


def expect_shape(got: Tensor, shape: Sequence[int], what: str) -> None:
    if tuple(got.shape) != tuple(shape):
        raise CheckFailed(f"{what}: expected shape {list(shape)}, got {list(got.shape)}")


def max_difference(got: Tensor, want: Tensor, what: str) -> float:
    """``max |got - want|`` (NaN counts as infinite), after the shapes are checked."""
    expect_shape(got, want.shape, what)
    difference = (got.detach().double() - want.detach().double()).abs()
    return float(difference.nan_to_num(nan=float("inf")).max())


def random_weights(
    params: Mapping[str, tuple[int, ...]], seed: int, std: float = 0.25
) -> dict[str, Tensor]:
    """``N(0, std)`` values for every parameter in ``params``, drawn in its order from one
    seeded generator; LayerNorm gains (named ``w``) scattered around 1, so that normalised
    values keep their size."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in params.items():
        noise = torch.randn(shape, generator=gen) * std
        weights[name] = 1.0 + noise if name.rpartition(".")[2] == "w" else noise
    return weights


def check_resized(
    subject: Subject, module: nn.Module, name: str, shape: tuple[int, ...], given: str
) -> None:
    """Built with the sizes ``given``, the weight ``name`` has the shape they make (when the
    parameters are named as tfs's)."""
    got = tuple(module.get_parameter(name).shape) if subject.named_as_tfs else shape
    if got != shape:
        raise CheckFailed(
            f"with {given}, {name} should be {list(shape)}, got {list(got)} — use "
            f"the arguments, not fixed sizes"
        )


def module_for_probes(
    subject: Subject, weights: Mapping[str, Tensor], **overrides: Any
) -> nn.Module:
    """``weights`` loaded when the parameters are named as tfs's, else the class's own."""
    module = subject.build(**overrides)
    if subject.named_as_tfs:
        subject.load(module, weights)
    return module


def check_same(got: Tensor, want: Tensor, tolerance: float, what: str = "the output") -> None:
    """``got`` equals tfs's ``want`` within ``tolerance`` (``[batch, pos, ...]`` outputs
    name the position where they differ most)."""
    difference = max_difference(got, want, what)
    if not difference <= tolerance:
        where = ""
        if got.ndim >= 2:
            gap = (got.detach() - want.detach()).abs().transpose(0, 1).flatten(1).amax(dim=1)
            where = f"largest at position {int(gap.nan_to_num(math.inf).argmax())}; "
        raise CheckFailed(
            f"under the same weights {what} and tfs's differ by up to {difference:.3g} "
            f"({where}tolerance {tolerance:g})"
        )


def check_dtypes(subject: Subject, run: Callable[[nn.Module, torch.dtype], Tensor]) -> None:
    """``run(module, dtype)`` feeds a module of that dtype an input of that dtype: the output
    keeps the dtype, float32 (the default) and float64 alike."""
    for dtype in (torch.float32, torch.float64):
        got = output(run(subject.build().to(dtype), dtype)).dtype
        if got != dtype:
            raise CheckFailed(f"dtype: {dtype} weights and input gave {got} out")


def check_every_parameter_used(
    module: nn.Module, run: Callable[[], Tensor], names: Sequence[str]
) -> None:
    """Changing any parameter in ``names`` changes what ``run()`` returns. A random change,
    not a constant one: a constant added to every logit of a position is one softmax
    ignores, which would hide a softmax bug behind "never used"."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        before = output(run())
        for name in names:
            parameter = module.get_parameter(name)
            kept = parameter.clone()
            parameter.add_(torch.randn(parameter.shape, generator=gen))
            moved = max_difference(output(run()), before, "output")
            parameter.copy_(kept)
            if not moved > 1e-6:
                kind = "the bias" if name.rpartition(".")[2].startswith("b") else "the weight"
                raise CheckFailed(
                    f"the output did not change when {name} changed — {kind} {name} is never used"
                )


def check_gradients(
    subject: Subject,
    weights: Mapping[str, Tensor],
    make_reference: Callable[[], nn.Module],
    x: Tensor,
    tolerance: float,
) -> None:
    """Backpropagate ``sum(module(x) * direction)`` for a fixed random ``direction``: every
    parameter (and ``x`` when it is floating point) must get a gradient, equal to the
    gradient through tfs's module (``make_reference()`` with ``weights`` loaded). The
    gradients are compared only when the outputs agree: else the forward is to blame."""
    module = module_for_probes(subject, weights)
    inputs = [x.detach().clone() for _ in range(2)]
    if x.is_floating_point():
        inputs = [i.requires_grad_() for i in inputs]
    reference = make_reference()
    reference.load_state_dict(weights)
    want = reference(inputs[1])
    got = output(module(inputs[0]))
    expect_shape(got, want.shape, "output")
    direction = torch.randn(want.shape, generator=torch.Generator().manual_seed(3))
    if got.requires_grad:
        torch.autograd.backward((got * direction).sum())
    missing = [name for name, p in module.named_parameters() if p.grad is None]
    if x.is_floating_point() and inputs[0].grad is None:
        missing.append("the input")
    if missing:
        raise CheckFailed(
            f"{_listed(missing)} got no gradient — compute the output from them with "
            f"differentiable tensor ops (no .detach(), .item(), .data or torch.no_grad())"
        )
    if not subject.named_as_tfs:
        return
    if not max_difference(got, want, "output") <= tolerance:
        raise Unmet("same as tfs")
    torch.autograd.backward((want * direction).sum())
    pairs = [
        (name, module.get_parameter(name).grad, p.grad) for name, p in reference.named_parameters()
    ]
    if x.is_floating_point():
        pairs.insert(0, ("the input", inputs[0].grad, inputs[1].grad))
    for name, got_grad, want_grad in pairs:
        assert got_grad is not None
        assert want_grad is not None
        difference = max_difference(got_grad, want_grad, f"gradient of {name}")
        if not difference <= tolerance:
            raise CheckFailed(
                f"the gradient of {name} differs from tfs's by up to {difference:.3g} "
                f"(tolerance {tolerance:g}) under the same weights — if the output is right, "
                "look for a .detach() or a hand-written backward that changes the gradient"
            )


def check_parameters(subject: Subject) -> None:
    """The parameters are named and shaped as tfs's; the weight-setting checks need it."""
    assert subject.contract is not None
    module = subject.build()
    got = {name: tuple(p.shape) for name, p in module.named_parameters()}
    want = dict(subject.contract.params)
    wrong = [name for name, shape in want.items() if got.get(name) != shape]
    if wrong:
        expected = _listed([f"{name} {list(want[name])}" for name in wrong])
        found = _listed([f"{name} {list(shape)}" for name, shape in got.items()]) or "none"
        raise CheckFailed(
            f"expected {expected}; found {found} — name and shape the weights as "
            f"{subject.contract.signature} does (the checks that set weights need it)"
        )
    subject.named_as_tfs = True
    extra = sorted(set(got) - set(want))
    if extra:
        raise CheckFailed(f"unexpected parameters {extra}: tfs's component has only {list(want)}")


def run_checks(
    component: str,
    cls: Callable[..., Any],
    contract: Contract | None,
    checks: Sequence[tuple[str, Check]],
    *,
    needs: Mapping[str, Sequence[str]] | None = None,
    catalogue: Catalogue | None = None,
) -> Report:
    """Build ``cls`` as the contract says, then run ``parameters`` and each check in order.

    With ``contract=None`` the target is a function the checks call themselves (a loss):
    nothing is built and there are no parameters to check. ``needs`` maps a check to the
    checks it relies on: when one of those did not pass, it is skipped, not run to a
    misleading failure. A learning check needs "shapes and dtypes" besides.
    ``catalogue``'s known mistakes are compared with the class once its parameters are
    named as tfs's; the one it matches heads the report.
    """
    subject = Subject(cls, contract)
    report = Report(component, getattr(cls, "__qualname__", repr(cls)))
    with _torch_settings_kept():
        if contract is not None:
            try:
                subject.build()
            except NotImplementedError as error:
                report.results.append(CheckResult("construction", "todo", _todo(error, subject)))
                return report
            except Exception as error:  # the learner's code: any failure is reported, not raised
                error = error.error if isinstance(error, LearnerError) else error
                report.construction_error = (
                    f"{cls.__name__}({_keywords(contract.kwargs())}) raised "
                    f"{trimmed(error, subject.file)}\n"
                    f"expected the constructor of tfs's {contract.signature}"
                )
                return report
            checks = [("parameters", check_parameters), *checks]
        status: dict[str, str] = {}
        shapes_checked = "shapes and dtypes" in dict(checks)
        for name, check in checks:
            required = [*(needs or {}).get(name, ())]
            if name.startswith("learning") and shapes_checked:
                required.append("shapes and dtypes")  # training a wrong shape reads as a lesson
            unmet = [n for n in required if status.get(n) != "pass"]
            result = (
                CheckResult(name, "not run", depends=tuple(unmet))
                if unmet
                else _run_one(name, check, subject)
            )
            report.results.append(result)
            status[name] = result.status
            if catalogue is not None and report.mistake is None and name == "parameters":
                report.mistake = _diagnose(catalogue, subject, report)
        if catalogue is not None and contract is None:
            report.mistake = _diagnose(catalogue, subject, report)
    return report


def _diagnose(catalogue: Catalogue, subject: Subject, report: Report) -> type[Formula] | None:
    """The known mistake whose outputs the class gives on every probe, if one does."""
    if subject.contract is not None and not subject.named_as_tfs:
        return None
    found: list[type[Formula]] = []

    def compare() -> None:
        got = []
        with torch.no_grad():
            for weights, inputs in catalogue.probes():
                if subject.contract is None:
                    got.append(output(subject.call(*inputs)))
                else:
                    got.append(output(subject.load(subject.build(), weights)(*inputs)))
        if _same_outputs(got, catalogue.outputs(catalogue.correct), catalogue.tolerance):
            return
        found.extend(
            mistake
            for mistake in catalogue.mistakes
            if _same_outputs(got, catalogue.outputs(mistake), catalogue.tolerance)
        )

    result = _run_one("known mistakes", lambda _: compare(), subject, quiet=True)
    if result.status == "error":
        report.results.append(result)
    return found[0] if found else None


def gap(got: Tensor, want: Tensor) -> float:
    """``max |got - want|`` relative to ``want``'s size (at least 1), where a NaN in both at
    the same place counts as equal (a mistake may give NaN, as -inf in every softmax slot
    does); infinite when the shapes differ."""
    if got.shape != want.shape:
        return math.inf
    both = got.isnan() & want.isnan()
    difference = (got.detach().double() - want.detach().double()).abs().masked_fill(both, 0.0)
    size = want.detach().double().nan_to_num(0.0, 0.0, 0.0).abs().max() if want.numel() else 0
    return float(difference.nan_to_num(math.inf).max()) / max(1.0, float(size))


def _same_outputs(got: Sequence[Tensor], want: Sequence[Tensor], tolerance: float) -> bool:
    return all(gap(g, w) <= tolerance for g, w in zip(got, want, strict=True))


def _run_one(name: str, check: Check, subject: Subject, *, quiet: bool = False) -> CheckResult:
    """Run one check. An exception from the learner's code fails it with their lines (once
    per report: a repeat points at the first); one from the check's own code is a bug in
    tfs, reported as an error. ``quiet``: a check whose learner errors are not reported."""
    try:
        check(subject)
    except CheckFailed as failure:
        return CheckResult(name, "fail", str(failure))
    except NotRun as reason:
        return CheckResult(name, "not run", str(reason))
    except Unmet as unmet:
        return CheckResult(name, "not run", depends=unmet.depends)
    except NotImplementedError as error:
        return CheckResult(name, "todo", _todo(error, subject))
    except Exception as error:
        theirs = error.error if isinstance(error, LearnerError) else error
        if not isinstance(error, LearnerError) and not _own_frames(error, subject.file):
            return CheckResult(name, "error", f"the check itself raised {_bug(error)}")
        if quiet:
            return CheckResult(name, "fail")
        frames = _own_frames(theirs, subject.file)
        key = (type(theirs), str(theirs), *((f.filename, f.lineno) for f in frames))
        if key in subject.raised:
            return CheckResult(
                name, "fail", f"raised the same {type(theirs).__name__} as '{subject.raised[key]}'"
            )
        subject.raised[key] = name
        return CheckResult(name, "fail", f"raised {trimmed(theirs, subject.file)}")
    return CheckResult(name, "pass")


def _bug(error: BaseException) -> str:
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return (
        f"{type(error).__name__}: {error} at {frame.filename}:{frame.lineno} — a bug in tfs's "
        f"checks, not in your code; please report it"
    )


@contextmanager
def _torch_settings_kept() -> Iterator[None]:
    """The checks seed torch's global generator; the caller's stream is left as it was.
    They run on one intra-op thread: their models are tiny, and a second thread waiting on
    a core that something else holds made ``check_decoder`` 8x slower (56 s against 7 s
    with one core busy; 5.8 s against 6.6 s on an idle machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


def _listed(items: list[str], most: int = 8) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _keywords(kwargs: Mapping[str, Any]) -> str:
    shown = {
        k: f"{type(v).__name__}(...)" if isinstance(v, nn.Module) else repr(v)
        for k, v in kwargs.items()
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items())


def source_file(cls: object) -> str | None:
    try:
        return inspect.getsourcefile(cls)  # type: ignore[arg-type]
    except (TypeError, OSError):  # a builtin, or a class typed at the prompt
        return None


def _own_frames(error: BaseException, file: str | None) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(error.__traceback__)
    return [frame for frame in frames if frame.filename == file]


def _todo(error: NotImplementedError, subject: Subject) -> str:
    frames, name = _own_frames(error, subject.file), subject.cls.__name__
    method = frames[-1].name if frames else name
    return f"not implemented yet: {name if method == name else f'{name}.{method}'}"


def trimmed(error: BaseException, file: str | None) -> str:
    """The exception, with its traceback cut down to the lines of ``file`` (the learner's
    own), one indented line each."""
    frames = _own_frames(error, file)
    lines = [f"{type(error).__name__}: {error}"]
    if isinstance(error, SyntaxError) and error.filename == file:
        lines.append(f"\n    {file}:{error.lineno}: {(error.text or '').strip()}")
    lines += [
        f"\n    {frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
        for frame in frames
    ]
    return "".join(lines)
