"""Fixtures for the tests of every package (pytest reads this file for any test path below
the repository root, including the smoke session's run against installed wheels).

* ``intra_op_threads``: each package's own conftest.py pins one intra-op thread, since its
  tiny models only lose time to a second one. The component tests also run at two
  threads, where torch splits large elementwise ops, reductions and index ops across
  threads as a user's default setting does on any multi-core machine: their module names
  the fixture, ``pytestmark = pytest.mark.usefixtures("intra_op_threads")``.
* ``compare_fast_op``: a fast op (written-out backward, chunks, fused products) against
  its plain formula at the thread count in force, and reproducible to the bit.
* ``verify_autodiff`` and ``float64_params``: second derivatives and ``torch.func``
  transforms of a module, the same checks for every package.
* ``expect_failure``: a planted bug's report failed the check named, in the words given
  (each package's ``test_checks.py``).
* ``saved_for_backward``: the tensors autograd keeps for backward while a call runs.

torch is imported inside the functions: the scripts' tests run without it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch
    from torch import Tensor

# float64 throughout; written-out backward passes and the formulas sum in other orders.
RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture(scope="module", params=[1, 2], ids=["1-thread", "2-threads"])
def intra_op_threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs every test of the module once at one intra-op thread and once at two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


Fn = Callable[[dict[str, "Tensor"], dict[str, "Tensor"]], "Tensor"]


def _verify_autodiff(
    fn: Fn,
    params: dict[str, Tensor],
    inputs: dict[str, Tensor],
    *,
    fast_gradgradcheck: bool = False,
) -> None:
    """Second derivatives and ``torch.func`` transforms of ``fn(params, inputs)``, float64.

    ``inputs`` are batched along their first axis (integer ids or floats); the floating
    ones are differentiated as the parameters are. Checked:

    * ``gradgradcheck`` over every differentiated tensor (``fast_gradgradcheck``: torch's
      random-projection mode, for models with hundreds of parameters);
    * ``torch.func.jacrev`` and ``torch.func.jvp`` against the Jacobian that ordinary
      autograd gives (``torch.autograd.functional.jacobian``: one backward pass per
      output, through the written-out backward passes), and so does that Jacobian with
      ``vectorize=True``, which runs the backward passes under ``vmap``;
    * with parameters: ``torch.func.grad`` of a loss with respect to them against
      ``torch.autograd.grad``, and per-sample gradients, ``vmap(grad(...))`` over the
      batch, against a loop of ``torch.autograd.grad`` over one-sample batches.
    """
    import torch
    from torch.func import grad, jacrev, jvp, vmap

    primals = {**params, **{k: v for k, v in inputs.items() if v.is_floating_point()}}
    names = list(primals)

    def call(values: dict[str, Tensor]) -> Tensor:
        return fn({k: values[k] for k in params}, {k: values.get(k, v) for k, v in inputs.items()})

    def call_positional(*values: Tensor) -> Tensor:
        return call(dict(zip(names, values, strict=True)))

    def loss(p: dict[str, Tensor], x: dict[str, Tensor]) -> Tensor:
        return fn(p, x).tanh().sum()  # a loss with a non-zero second derivative

    def close(got: Tensor, want: Tensor, what: str) -> None:
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=what)

    leaves = tuple(primals[k].detach().requires_grad_() for k in names)
    if fast_gradgradcheck:
        # One flat vector of every differentiated entry: one random projection in all,
        # where torch's fast mode would take one per tensor.
        sizes = [t.numel() for t in leaves]

        def call_flat(flat: Tensor) -> Tensor:
            pieces = torch.split(flat, sizes)
            return call_positional(*(p.view(t.shape) for p, t in zip(pieces, leaves, strict=True)))

        flat = torch.cat([t.detach().reshape(-1) for t in leaves]).requires_grad_()
        assert torch.autograd.gradgradcheck(call_flat, (flat,), fast_mode=True)
    else:
        assert torch.autograd.gradgradcheck(call_positional, leaves)

    by_output = torch.autograd.functional.jacobian(call_positional, leaves)  # type: ignore[no-untyped-call]
    jacobian = dict(zip(names, by_output, strict=True))
    # vectorize=True vmaps the backward pass itself (as is_grads_batched=True does).
    batched = torch.autograd.functional.jacobian(call_positional, leaves, vectorize=True)  # type: ignore[no-untyped-call]
    for name, got in zip(names, batched, strict=True):
        close(got, jacobian[name], f"jacobian(vectorize=True), {name}")
    for name, got in jacrev(call)(primals).items():
        close(got, jacobian[name], f"jacrev, {name}")
    generator = torch.Generator().manual_seed(0)
    tangents = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in primals.items()
    }
    out, jvp_out = jvp(call, (primals,), (tangents,))[:2]
    expected = sum(
        (jacobian[k].flatten(out.ndim) @ tangents[k].flatten()).view(out.shape) for k in names
    )
    assert isinstance(expected, torch.Tensor)
    close(jvp_out, expected, "jvp")

    if not params:
        return
    leaf_params = {k: v.detach().requires_grad_() for k, v in params.items()}

    def autograd_grads(x: dict[str, Tensor]) -> tuple[Tensor, ...]:
        return torch.autograd.grad(loss(leaf_params, x), list(leaf_params.values()))

    got_grads = grad(loss)(params, inputs)
    for (name, got), want in zip(got_grads.items(), autograd_grads(inputs), strict=True):
        close(got, want, f"grad, {name}")

    def one_sample(p: dict[str, Tensor], x: dict[str, Tensor]) -> Tensor:
        return loss(p, {k: v[None] for k, v in x.items()})

    per_sample = vmap(grad(one_sample), in_dims=(None, 0))(params, inputs)
    for i in range(next(iter(inputs.values())).shape[0]):
        want_i = autograd_grads({k: v[i : i + 1] for k, v in inputs.items()})
        for (name, got), want in zip(per_sample.items(), want_i, strict=True):
            close(got[i], want, f"per-sample gradient {i}, {name}")


def _compare_fast_op(
    fast: Callable[..., Tensor],
    formula: Callable[..., Tensor],
    inputs: tuple[Tensor, ...],
    *,
    rtol: float,
    atol: float,
) -> None:
    """A fast op against its formula, in the conditions users run it: float32 inputs
    large enough for torch to split the work across the intra-op threads the fixture above
    sets. Outputs and gradients (for a random output gradient) agree within the stated
    tolerances; two runs of the fast op give the same bits, forward and backward; and so
    do its runs where autograd records nothing (``torch.no_grad()``,
    ``torch.inference_mode()``, where the ops skip their autograd Functions)."""
    import torch

    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    wanted = [t for t in leaves if t.requires_grad]
    out = fast(*leaves)
    generator = torch.Generator().manual_seed(0)
    grad_out = torch.randn(out.shape, generator=generator, dtype=out.dtype)
    grads = torch.autograd.grad(out, wanted, grad_out)
    expected = formula(*leaves)
    torch.testing.assert_close(out, expected, rtol=rtol, atol=atol)
    for got, want in zip(grads, torch.autograd.grad(expected, wanted, grad_out), strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)
    again = fast(*leaves)
    assert torch.equal(again, out), "the forward pass differs between two identical calls"
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            unrecorded = fast(*leaves)
        assert torch.equal(unrecorded, out), f"the forward pass differs under {mode.__name__}()"
    for got, first in zip(torch.autograd.grad(again, wanted, grad_out), grads, strict=True):
        assert torch.equal(got, first), "the backward pass differs between two identical calls"


def _float64_params(module: torch.nn.Module, seed: int = 0) -> dict[str, Tensor]:
    """The module's parameters by name, as new float64 tensors drawn from N(0, 0.5^2), and
    LayerNorm gains (named ``w``) from N(1, 0.5^2): biases are not zero and gains not one,
    so every parameter matters."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, p in module.named_parameters():
        value = 0.5 * torch.randn(p.shape, generator=generator, dtype=torch.float64)
        params[name] = value + 1.0 if name == "w" or name.endswith(".w") else value
    return params


@pytest.fixture
def verify_autodiff() -> Callable[..., None]:
    """:func:`_verify_autodiff`, for the tests of any package."""
    return _verify_autodiff


@pytest.fixture
def compare_fast_op() -> Callable[..., None]:
    """:func:`_compare_fast_op`, for the tests of any package."""
    return _compare_fast_op


def _expect_failure(report: Any, check: str, words: str) -> None:
    """A planted bug's report (``tfs_*.checks``): ``check`` failed, with ``words`` in its
    message."""
    failed = report.failures
    assert check in failed, f"{check!r} did not fail\n{report}"
    assert words in failed[check], f"{check}: {failed[check]!r} does not say {words!r}"


def _expect_named(report: Any, words: str | None) -> None:
    """A planted bug's report names a known mistake with ``words`` on the line after the
    header, or, with ``words=None``, names none."""
    second = str(report).splitlines()[1]
    if words is None:
        assert report.mistake is None, str(report)
    else:
        assert second.startswith("MISTAKE"), str(report)
        assert words in second, str(report)


def _computing(base: Any, formula: Any) -> Any:
    """A class built as ``base`` (tfs's, so with its parameters) whose forward computes
    ``formula`` under its own weights; for a function ``base``, a function."""
    if not isinstance(base, type):
        return lambda *inputs: formula({})(*inputs)

    def forward(self: Any, *inputs: Tensor) -> Tensor:
        return formula(dict(self.named_parameters()))(*inputs)  # type: ignore[no-any-return]

    return type(formula.__name__, (base,), {"forward": forward})


def _expect_mistake_named(check: Callable[..., Any], base: Any, mistake: Any) -> None:
    """A mistake of a catalogue (``tfs_*.checks``), computed by a class or function built as
    tfs's ``base``: its check names it on the first line after the header."""
    report = check(_computing(base, mistake), learning=False)
    assert report.mistake is mistake, str(report)
    assert str(report).splitlines()[1] == f"MISTAKE  {mistake.says}; {mistake.fix}"
    assert not report.ok


def _expect_told_apart(catalogue: Any) -> None:
    """Every mistake of ``catalogue`` differs, on some probe, from tfs's formula and from
    every other mistake by more than the catalogue's tolerance, so a match names one."""
    gap = sys.modules[type(catalogue).__module__].gap
    formulas = [catalogue.correct, *catalogue.mistakes]
    outputs = {f: catalogue.outputs(f) for f in formulas}
    for i, first in enumerate(formulas):
        for second in formulas[i + 1 :]:
            pairs = zip(outputs[first], outputs[second], strict=True)
            gaps = [min(gap(a, b), gap(b, a)) for a, b in pairs]
            assert max(gaps) > 10 * catalogue.tolerance, (first, second, gaps)


def _saved_for_backward(fn: Callable[..., Any], *args: Any) -> list[Tensor]:
    """The tensors autograd keeps for backward while ``fn(*args)`` runs, in order."""
    import torch

    saved: list[Tensor] = []

    def pack(t: Tensor) -> Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return saved


@pytest.fixture
def saved_for_backward() -> Callable[..., list[Tensor]]:
    """:func:`_saved_for_backward`, for the memory contracts of the fast ops."""
    return _saved_for_backward


@pytest.fixture
def expect_failure() -> Callable[..., None]:
    """:func:`_expect_failure`, for the planted-bug tables of every package."""
    return _expect_failure


@pytest.fixture
def float64_params() -> Callable[..., dict[str, Tensor]]:
    """:func:`_float64_params`, for the tests of any package."""
    return _float64_params


@pytest.fixture
def expect_named() -> Callable[..., None]:
    """:func:`_expect_named`, for the planted-bug tables of every package."""
    return _expect_named


@pytest.fixture
def expect_mistake_named() -> Callable[..., None]:
    """:func:`_expect_mistake_named`, for the mistake catalogues of every package."""
    return _expect_mistake_named


@pytest.fixture
def expect_told_apart() -> Callable[..., None]:
    """:func:`_expect_told_apart`, for the mistake catalogues of every package."""
    return _expect_told_apart


@pytest.fixture
def without_runtime_type_checks() -> Iterator[None]:
    """jaxtyping's and typeguard's runtime checks off for one test: for the tests that run
    the same forwards over and over (tfs's checks a hundred times in the check kit's
    per-mistake, planted-bug and fuzz tests; thousands of steps in the training-loop
    tests), where checking the same shapes again tells nothing new and made one
    ``check_decoder`` 10x slower (0.62 s against 0.07 s) and test_train 2.4x. The model's
    and components' own tests keep them on."""
    import jaxtyping

    disabled = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", disabled)
