"""How an op with a written-out backward pass runs: through its autograd Function, as its
forward computation alone, or as its plain formula differentiated by autograd.

tfs-attention and tfs-mlp, which install independently, each carry this same file
(tfs-decoder uses tfs-attention's); scripts/test_package_copies.py keeps the copies
identical.
"""

from __future__ import annotations

import torch
from torch import Tensor


def formula_needed(grad: Tensor) -> bool:
    """Inside a custom ``backward``: whether to differentiate the op's plain formula
    instead of running the written-out pass.

    True when the gradient will itself be differentiated (``create_graph=True`` turns grad
    mode on in backward), and when the backward pass runs under vmap (a ``torch.func``
    transform, or torch's batched gradients: ``is_grads_batched=True``,
    ``jacobian(vectorize=True)``). The written-out passes work in place on fresh tensors,
    which neither allows.
    """
    if torch.is_grad_enabled() or torch._C._are_functorch_transforms_active():
        return True
    # torch.compile cannot trace this check (a graph break at every op), and traces no
    # legacy batched tensors.
    return not torch.compiler.is_compiling() and torch._C._functorch.is_legacy_batchedtensor(grad)


def graph_needed(*inputs: Tensor) -> bool:
    """Whether autograd will record an op on ``inputs``: grad mode is on and an input
    requires a gradient.

    When it will not (``torch.no_grad()``, ``torch.inference_mode()``, inputs that need no
    gradient), an op with a written-out backward calls its Function's forward computation
    directly: the same operations in the same order, so the same result to the bit,
    without the per-call cost of ``torch.autograd.Function.apply``, which dominates the
    small steps of cached generation.
    """
    return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
