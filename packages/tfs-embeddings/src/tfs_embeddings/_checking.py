"""Running a component's checks on someone else's class: the report, the runner, and the
contract (constructor keywords, parameter names and shapes) a class must meet.

tfs-embeddings, tfs-attention and tfs-mlp, which install independently, each carry this
same file (tfs-decoder uses tfs-attention's); scripts/test_package_copies.py keeps the
copies identical.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

MARKS = {"pass": "PASS", "fail": "FAIL", "todo": "TODO", "not run": "SKIP"}


class CheckFailed(Exception):
    """Raised by a check: one sentence that names the concept, with the evidence."""


class NotRun(Exception):
    """Raised by a check that cannot run on this class; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, ``status`` (``"pass"``, ``"fail"``, ``"todo"`` for code that
    still raises ``NotImplementedError``, ``"not run"``) and, unless it passed, why."""

    name: str
    status: str
    message: str = ""

    def __str__(self) -> str:
        line = f"{MARKS[self.status]}  {self.name}"
        return f"{line}: {self.message}" if self.message else line


@dataclass
class Report:
    """What the checks of one component found in one class.

    ``ok`` is true when the class could be built and every check passed; ``str(report)``
    is one line per check. ``construction_error`` is set when the class could not be
    built with tfs's constructor keywords, and then no check ran.
    """

    component: str
    target: str
    results: list[CheckResult] = field(default_factory=list)
    construction_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.construction_error is None and all(r.status == "pass" for r in self.results)

    def __str__(self) -> str:
        head = f"{self.component} checks on {self.target}"
        if self.construction_error is not None:
            return f"{head}: could not build it\n{self.construction_error}"
        passed = sum(r.status == "pass" for r in self.results)
        lines = [head, *(str(r) for r in self.results)]
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
        self.file = _source_file(cls)
        self.named_as_tfs = False

    def build(self, **overrides: Any) -> nn.Module:
        """A fresh instance from the contract's keywords (with ``overrides``), seeded."""
        assert self.contract is not None, "a function target is called, not built"
        torch.manual_seed(0)
        module = self.cls(**{**self.contract.kwargs(), **overrides})
        if not isinstance(module, nn.Module):
            raise CheckFailed(f"construction: expected an nn.Module, got {type(module).__name__}")
        return module

    def load(self, module: nn.Module, weights: Mapping[str, Tensor]) -> nn.Module:
        """Copy ``weights`` into the parameters of the same names; not run without them."""
        if not self.named_as_tfs:
            raise NotRun("needs the parameters named and shaped as tfs's (see 'parameters')")
        own = dict(module.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                own[name].copy_(value)
        return module


def output(value: object, what: str = "forward") -> Tensor:
    """``value`` if it is a tensor, else a failed check that says what came back."""
    if not isinstance(value, Tensor):
        raise CheckFailed(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def expect_shape(got: Tensor, shape: Sequence[int], what: str) -> None:
    if tuple(got.shape) != tuple(shape):
        raise CheckFailed(f"{what}: expected shape {list(shape)}, got {list(got.shape)}")


def max_difference(got: Tensor, want: Tensor, what: str) -> float:
    """``max |got - want|`` (NaN counts as infinite), after the shapes are checked."""
    expect_shape(got, want.shape, what)
    difference = (got.detach().double() - want.detach().double()).abs()
    return float(difference.nan_to_num(nan=float("inf")).max())


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
) -> Report:
    """Build ``cls`` as the contract says, then run ``parameters`` and each check in order.

    With ``contract=None`` the target is a function the checks call themselves (a loss):
    nothing is built and there are no parameters to check.
    """
    subject = Subject(cls, contract)
    report = Report(component, getattr(cls, "__qualname__", repr(cls)))
    with _rng_kept():
        if contract is None:
            report.results += [_run_one(name, check, subject) for name, check in checks]
            return report
        try:
            subject.build()
        except NotImplementedError as error:
            report.results.append(CheckResult("construction", "todo", _todo(error, subject)))
            return report
        except Exception as error:  # the learner's code: any failure is reported, not raised
            report.construction_error = (
                f"{cls.__name__}({_keywords(contract.kwargs())}) raised "
                f"{_trimmed(error, subject)}\n"
                f"expected the constructor of tfs's {contract.signature}"
            )
            return report
        for name, check in [("parameters", check_parameters), *checks]:
            report.results.append(_run_one(name, check, subject))
    return report


def _run_one(name: str, check: Check, subject: Subject) -> CheckResult:
    try:
        check(subject)
    except CheckFailed as failure:
        return CheckResult(name, "fail", str(failure))
    except NotRun as reason:
        return CheckResult(name, "not run", str(reason))
    except NotImplementedError as error:
        return CheckResult(name, "todo", _todo(error, subject))
    except Exception as error:  # the learner's code raised: show their lines
        return CheckResult(name, "fail", f"raised {_trimmed(error, subject)}")
    return CheckResult(name, "pass")


@contextmanager
def _rng_kept() -> Iterator[None]:
    """The checks seed torch's global generator; the caller's stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        yield


def _listed(items: list[str], most: int = 8) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def _keywords(kwargs: Mapping[str, Any]) -> str:
    shown = {
        k: f"{type(v).__name__}(...)" if isinstance(v, nn.Module) else repr(v)
        for k, v in kwargs.items()
    }
    return ", ".join(f"{key}={value}" for key, value in shown.items())


def _source_file(cls: object) -> str | None:
    try:
        return inspect.getsourcefile(cls)  # type: ignore[arg-type]
    except TypeError:
        return None


def _own_frames(error: BaseException, subject: Subject) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(error.__traceback__)
    return [frame for frame in frames if frame.filename == subject.file]


def _todo(error: NotImplementedError, subject: Subject) -> str:
    frames = _own_frames(error, subject)
    where = f"{subject.cls.__name__}.{frames[-1].name}" if frames else subject.cls.__name__
    return f"not implemented yet: {where}"


def _trimmed(error: BaseException, subject: Subject) -> str:
    """The exception, with the traceback cut down to the lines of the class's own file."""
    frames = _own_frames(error, subject)
    lines = [f"{type(error).__name__}: {error}"]
    lines += [
        f"\n    {frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
        for frame in frames
    ]
    return "".join(lines)
