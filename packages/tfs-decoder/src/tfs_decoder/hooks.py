"""Reading and editing activations through hook points, for interpretability.

A hook point is any submodule whose own name starts with ``hook_`` (the packages use
identity modules, ``nn.Identity`` subclasses that skip the module call machinery while
no hook is attached), named by its path in the model, as in TransformerLens:
``blocks.0.attn.hook_pattern``. Everything here is built on ordinary PyTorch forward
hooks, attached for one forward and removed afterwards, also when it raises; so it works
for any model assembled from the tfs packages, or with hook points of your own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

HookFn = Callable[[Tensor, str], Tensor | None]
"""``fn(activation, name)``: return a tensor to replace the activation, or ``None`` to keep it."""


def hook_points(model: nn.Module) -> dict[str, nn.Module]:
    """Every hook point of ``model``, by name, in the order the modules were registered."""
    return {
        name: module
        for name, module in model.named_modules()
        if name.rpartition(".")[2].startswith("hook_")
    }


def _validate_names(argument: str, names: Iterable[str], known: dict[str, nn.Module]) -> None:
    unknown = [name for name in names if name not in known]
    if unknown:
        # One entry per kind of hook point: blocks.0.attn.hook_q, blocks.1... -> blocks.{i}...
        kinds = sorted({re.sub(r"\.\d+\.", ".{i}.", name) for name in known})
        raise ValueError(f"{argument}: expected hook point names such as {kinds}, got {unknown}")


@contextmanager
def _attached(hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    handles: list[RemovableHandle] = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def run_with_cache(
    model: nn.Module, *args: Any, names: Iterable[str] | None = None, **kwargs: Any
) -> tuple[Any, dict[str, Tensor]]:
    """Run ``model(*args, **kwargs)`` and return its output with the activations it made.

    Args:
        model: any module with hook points.
        names: the hook points to record; all of them when ``None``.

    Returns:
        ``(output, cache)``: ``cache`` maps each recorded hook point's name to its
        activation, detached from the autograd graph.
    """
    known = hook_points(model)
    wanted = list(known) if names is None else list(names)
    _validate_names("names", wanted, known)
    cache: dict[str, Tensor] = {}

    def recorder(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def record(module: nn.Module, inputs: Any, output: Tensor) -> None:
            cache[name] = output.detach()

        return record

    with _attached([(known[name], recorder(name)) for name in wanted]):
        output = model(*args, **kwargs)
    return output, cache


def run_with_hooks(
    model: nn.Module, *args: Any, fwd_hooks: Sequence[tuple[str, HookFn]], **kwargs: Any
) -> Any:
    """Run ``model(*args, **kwargs)`` with ``fn(activation, name)`` called at each named hook
    point; a tensor it returns replaces the activation for the rest of the forward.

    Example, zero-ablating head 3 of layer 0::

        def ablate(pattern, name):
            pattern = pattern.clone()
            pattern[:, 3] = 0.0
            return pattern

        logits = run_with_hooks(model, tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", ablate)])
    """
    known = hook_points(model)
    _validate_names("fwd_hooks", [name for name, _ in fwd_hooks], known)

    def caller(name: str, fn: HookFn) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
        def call(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            return fn(output, name)

        return call

    with _attached([(known[name], caller(name, fn)) for name, fn in fwd_hooks]):
        return model(*args, **kwargs)
