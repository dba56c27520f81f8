"""Second derivatives and torch.func transforms through LayerNorm, the residual block and
the whole Decoder, and a gradient penalty and a Hessian-vector product checked against the
Decoder's transformers GPT-2 twin (``to_hf_gpt2``).

LayerNorm, the QKV projection, the attention core and GELU have written-out backward
passes for plain first-order gradients; where a gradient is differentiated again, or under
``torch.func``, their formulas run instead. The helper (``verify_autodiff`` in the
repository's conftest.py) compares every transform with ordinary autograd in float64 at
rtol 1e-9. GPT-2's twin is built from native torch layers, so agreeing with it second
order is agreeing with an independent implementation; it has no output bias, so ``b_U``
is left out of those comparisons (it is zero, and its gradient is not penalised).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from tfs_attention import MultiHeadAttention
from tfs_decoder import (
    Decoder,
    DecoderConfig,
    LayerNorm,
    ResidualBlock,
    from_hf_gpt2,
    next_token_loss,
    to_hf_gpt2,
)
from tfs_decoder.layernorm import layer_norm, layer_norm_formula
from tfs_mlp import MLP

VerifyAutodiff = Callable[..., None]
Float64Params = Callable[..., dict[str, Tensor]]
RTOL, ATOL = 1e-9, 1e-12
TOKENS = torch.tensor([[1, 4, 6, 1], [3, 3, 0, 4]])
CONFIG = DecoderConfig(d_vocab=7, d_model=4, n_heads=2, d_head=2, d_mlp=8, n_layers=2, n_ctx=4)


def _randn(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_layer_norm(verify_autodiff: VerifyAutodiff) -> None:
    ln = LayerNorm(4)
    params = {"w": 1.0 + 0.5 * _randn(4, seed=2), "b": _randn(4, seed=3)}
    verify_autodiff(
        lambda p, i: functional_call(ln, p, (i["x"],)), params, {"x": 3 * _randn(2, 3, 4)}
    )


def test_layer_norm_second_derivatives_equal_the_formula_s() -> None:
    """The Hessian-vector product of a loss through the fast layer_norm equals the one
    through layer_norm_formula (create_graph backward then backward again)."""
    x, w, b = 3 * _randn(4, 5), 1.0 + _randn(5, seed=2), _randn(5, seed=3)
    v = [_randn(*t.shape, seed=4 + i) for i, t in enumerate((x, w, b))]
    products = []
    for f in (layer_norm, layer_norm_formula):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        out = f(leaves[0], leaves[1], leaves[2], 1e-5)
        grads = torch.autograd.grad(out.sin().sum(), leaves, create_graph=True)
        dot = sum((g * d).sum() for g, d in zip(grads, v, strict=True))
        assert isinstance(dot, Tensor)
        products.append(torch.autograd.grad(dot, leaves))
    for got, want in zip(*products, strict=True):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)


def test_residual_block(verify_autodiff: VerifyAutodiff, float64_params: Float64Params) -> None:
    block = ResidualBlock(4, MultiHeadAttention(4, 2), MLP(4, 8))
    verify_autodiff(
        lambda p, i: functional_call(block, p, (i["x"],)),
        float64_params(block),
        {"x": _randn(2, 3, 4)},
        fast_gradgradcheck=True,
    )


def test_decoder(verify_autodiff: VerifyAutodiff, float64_params: Float64Params) -> None:
    decoder = Decoder(CONFIG)
    verify_autodiff(
        lambda p, i: functional_call(decoder, p, (i["tokens"],)),
        _gpt2_params(float64_params, decoder),
        {"tokens": TOKENS},
        fast_gradgradcheck=True,
    )


def _gpt2_params(
    float64_params: Float64Params, decoder: Decoder, seed: int = 0
) -> dict[str, Tensor]:
    """``float64_params(decoder, seed)`` with ``b_U`` zero: GPT-2 has no output bias."""
    params = float64_params(decoder, seed)
    params["unembed.b_U"].zero_()
    return params


def _twins(float64_params: Float64Params) -> tuple[Decoder, Any]:
    """A float64 Decoder with random parameters and its GPT-2 twin (eager attention, which
    torch differentiates twice; the sdpa kernels are differentiated once)."""
    decoder = Decoder(CONFIG).double()
    decoder.load_state_dict(_gpt2_params(float64_params, decoder))
    twin = to_hf_gpt2(decoder)
    # Rebuilt rather than switched (set_attn_implementation): transformers before 4.48
    # picks the attention class when the model is built.
    eager = type(twin)._from_config(twin.config, attn_implementation="eager").to(twin.dtype)
    eager.load_state_dict(twin.state_dict())
    return decoder, eager


def _loss(model: torch.nn.Module, hf: bool) -> Tensor:
    logits = model(TOKENS).logits if hf else model(TOKENS)
    return next_token_loss(logits, TOKENS)


def _in_tfs_names(twin: Any, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Tensors named and laid out as the twin's parameters, named and laid out as a
    Decoder's (by converting a copy of the twin that holds them)."""
    holder = copy.deepcopy(twin)
    with torch.no_grad():
        for name, parameter in holder.named_parameters():
            parameter.copy_(tensors[name])
    return dict(from_hf_gpt2(holder).state_dict())


def _assert_equal_but_b_U(ours: dict[str, Tensor], theirs: dict[str, Tensor]) -> None:
    assert set(ours) - {"unembed.b_U"} == set(theirs) - {"unembed.b_U"}
    for name in set(ours) - {"unembed.b_U"}:
        torch.testing.assert_close(ours[name], theirs[name], rtol=RTOL, atol=ATOL, msg=name)


def _gradient_penalty_gradient(model: torch.nn.Module, hf: bool) -> dict[str, Tensor]:
    """d/dθ of sum ||dL/dθ||^2 over every parameter but b_U."""
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(_loss(model, hf), list(params.values()), create_graph=True)
    penalty = sum(
        g.square().sum() for n, g in zip(params, grads, strict=True) if n != "unembed.b_U"
    )
    assert isinstance(penalty, Tensor)
    return dict(zip(params, torch.autograd.grad(penalty, list(params.values())), strict=True))


def test_gradient_penalty_equals_gpt2_twin_s(float64_params: Float64Params) -> None:
    decoder, twin = _twins(float64_params)
    ours = _gradient_penalty_gradient(decoder, hf=False)
    assert max(g.abs().max() for g in ours.values()) > 1e-3  # not vanishing
    _assert_equal_but_b_U(ours, _in_tfs_names(twin, _gradient_penalty_gradient(twin, hf=True)))


def _hessian_vector_product(
    model: torch.nn.Module, hf: bool, direction: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(_loss(model, hf), list(params.values()), create_graph=True)
    dot = sum((g * direction[n]).sum() for n, g in zip(params, grads, strict=True))
    assert isinstance(dot, Tensor)
    return dict(zip(params, torch.autograd.grad(dot, list(params.values())), strict=True))


def test_hessian_vector_product_equals_gpt2_twin_s(float64_params: Float64Params) -> None:
    decoder, twin = _twins(float64_params)
    holder = copy.deepcopy(decoder)
    holder.load_state_dict(_gpt2_params(float64_params, holder, seed=1))
    direction = dict(holder.named_parameters())  # b_U's component is zero
    their_direction = dict(to_hf_gpt2(holder).named_parameters())
    ours = _hessian_vector_product(decoder, False, direction)
    theirs = _hessian_vector_product(twin, True, their_direction)
    _assert_equal_but_b_U(ours, _in_tfs_names(twin, theirs))
