"""Hook points: identity modules where a forward hook can read or replace an activation."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.modules import module as _module


class HookPoint(nn.Identity):
    """An identity module for ordinary hooks (``register_forward_hook`` and the rest): a
    hook attached to it reads the activation passed through it, or replaces it by
    returning a tensor.

    With no hook attached to it, and no global module hook, a call returns its input at
    once, without ``nn.Module``'s call machinery: a model's many hook points then cost
    almost nothing. Otherwise the call is an ordinary module call, hooks and all.
    """

    def __call__(self, x: Tensor) -> Tensor:
        if (
            self._forward_hooks
            or self._forward_pre_hooks
            or self._backward_hooks
            or self._backward_pre_hooks
            or _module._global_forward_hooks
            or _module._global_forward_pre_hooks
            or _module._global_backward_hooks
            or _module._global_backward_pre_hooks
        ):
            out: Any = super().__call__(x)
            return out  # type: ignore[no-any-return]
        return x
