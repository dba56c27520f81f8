"""How an op written twice runs: as its plain formula, differentiated by autograd, or as a
faster computation of the same result with a written-out backward pass.

The ops are :func:`tfs_attention.softmax_attention`, :func:`tfs_mlp.gelu`,
:func:`tfs_decoder.layernorm.layer_norm` and attention's query/key/value projection in
cached generation. Each reads ``fast_op(its_formula, ...)``: the formula comes first, and
is what the op computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def under_transform() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ...) is active."""
    return torch._C._are_functorch_transforms_active()


def graph_needed(*inputs: Tensor) -> bool:
    """Whether autograd will record an op on ``inputs``: grad mode is on and an input
    requires a gradient."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)


def fast_op(
    formula: Callable[..., Tensor],
    forward: Callable[..., Tensor],
    with_backward: Callable[..., Tensor],
    *args: Any,
) -> Tensor:
    """``formula(*args)``, computed the fastest faithful way.

    - Under ``torch.func`` transforms: ``formula`` itself, which the transforms
      differentiate and batch as they do any plain tensor code.
    - Where autograd records nothing (``torch.no_grad()``, ``torch.inference_mode()``,
      inputs that need no gradient): ``forward``, the fast computation alone, without the
      per-call cost of ``torch.autograd.Function.apply``, which dominates the small steps
      of cached generation.
    - Otherwise: ``with_backward``, the fast computation with its written-out backward
      (an autograd Function's ``apply``); its backward turns to ``formula`` where
      :func:`formula_needed` says so.

    ``forward`` and ``with_backward`` compute what ``formula`` does, the same operations
    in the same order for the two of them, so the same result to the bit.
    """
    if under_transform():
        return formula(*args)
    if not graph_needed(*(arg for arg in args if isinstance(arg, Tensor))):
        return forward(*args)
    return with_backward(*args)


def formula_needed(grad: Tensor) -> bool:
    """Inside a written-out ``backward``: whether to differentiate the op's plain formula
    instead of running the written-out pass.

    True when the gradient will itself be differentiated (``create_graph=True`` turns grad
    mode on in backward), and when the backward pass runs under vmap (a ``torch.func``
    transform, or torch's batched gradients: ``is_grads_batched=True``,
    ``jacobian(vectorize=True)``). The written-out passes work in place on fresh tensors,
    which neither allows.
    """
    if torch.is_grad_enabled() or under_transform():
        return True
    # torch.compile cannot trace this check (a graph break at every op), and traces no
    # legacy batched tensors.
    return not torch.compiler.is_compiling() and torch._C._functorch.is_legacy_batchedtensor(grad)
