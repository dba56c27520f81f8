"""Hook points: identity modules that skip the module call machinery while nothing is
attached, and behave as ordinary modules, hooks and all, once something is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from tfs_core import HookPoint


@pytest.fixture
def point() -> HookPoint:
    return HookPoint()


def test_with_nothing_attached_the_input_itself_comes_back(point: HookPoint) -> None:
    x = torch.randn(2, 3)
    assert point(x) is x


def test_a_forward_hook_reads_and_replaces(point: HookPoint) -> None:
    x = torch.randn(2, 3)
    seen: list[Tensor] = []

    def double(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        seen.append(out)
        return out * 2

    handle = point.register_forward_hook(double)
    torch.testing.assert_close(point(x), x * 2)
    assert seen[0] is x
    handle.remove()
    assert point(x) is x


def test_a_forward_pre_hook_replaces_the_input(point: HookPoint) -> None:
    point.register_forward_pre_hook(lambda m, args: (args[0] + 1,))
    x = torch.zeros(2)
    torch.testing.assert_close(point(x), torch.ones(2))


def test_a_backward_hook_sees_the_gradient(point: HookPoint) -> None:
    grads: list[Tensor] = []

    def record(module: nn.Module, grad_in: Any, grad_out: tuple[Tensor, ...]) -> None:
        grads.append(grad_out[0])

    point.register_full_backward_hook(record)
    x = torch.randn(3, requires_grad=True)
    torch.autograd.grad((point(x) * 3).sum(), x)
    torch.testing.assert_close(grads[0], torch.full((3,), 3.0))


@pytest.fixture
def global_hook() -> Iterator[list[nn.Module]]:
    called: list[nn.Module] = []

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        called.append(module)

    handle = nn.modules.module.register_module_forward_hook(hook)
    yield called
    handle.remove()


def test_a_global_module_hook_sees_it(point: HookPoint, global_hook: list[nn.Module]) -> None:
    point(torch.randn(2))
    assert global_hook == [point]
