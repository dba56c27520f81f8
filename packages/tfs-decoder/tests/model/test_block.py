"""ResidualBlock: the pre-LayerNorm formula, composition with user modules, dropout placement.

Reference: the formula is recomputed in each test from the block's own submodules, with
LayerNorm taken from ``F.layer_norm`` reading the block's ``w`` and ``b``. Tolerance: fp32,
atol 1e-5 and rtol 1e-5 (the parameters are randomised to order 1, so outputs reach order 10
and differ from the reference only by float rounding of a different grouping).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from tfs_attention import KVCache, MultiHeadAttention
from tfs_decoder import LayerNorm, ResidualBlock
from tfs_mlp import MLP

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL = 1e-5
RTOL = 1e-5
D_MODEL = 16


def randomise_(module: nn.Module, seed: int) -> None:
    """Give every parameter (biases, LayerNorm w and b included) a distinct random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=g))


def make_block(*, dropout: float = 0.0, seed: int = 0) -> ResidualBlock:
    block = ResidualBlock(
        D_MODEL,
        MultiHeadAttention(D_MODEL, n_heads=4, d_head=5),
        MLP(D_MODEL, 3 * D_MODEL),
        eps=1e-5,
        dropout=dropout,
    )
    randomise_(block, seed)
    return block


def layer_norm(x: Tensor, ln: LayerNorm) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, eps=ln.eps)


def pre_ln_reference(block: ResidualBlock, x: Tensor) -> Tensor:
    """resid_mid = x + attn(ln1(x)); out = resid_mid + mlp(ln2(resid_mid))."""
    resid_mid = x + block.attn(layer_norm(x, block.ln1))
    out: Tensor = resid_mid + block.mlp(layer_norm(resid_mid, block.ln2))
    return out


@pytest.mark.parametrize(("batch", "pos"), [(3, 7), (2, 1), (1, 5)])
def test_block_equals_pre_ln_formula(batch: int, pos: int) -> None:
    block = make_block()
    x = torch.randn(batch, pos, D_MODEL, generator=torch.Generator().manual_seed(1))
    x_before = x.clone()
    out = block(x)
    assert out.shape == (batch, pos, D_MODEL)
    torch.testing.assert_close(out, pre_ln_reference(block, x), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(x, x_before, atol=0, rtol=0)  # the input is not mutated


def test_block_is_not_post_ln_or_with_swapped_norms() -> None:
    # The formula test above would also pass for a block that ignored its LayerNorm
    # parameters if they were 1 and 0; check the alternatives really differ here.
    block = make_block()
    x = torch.randn(2, 4, D_MODEL, generator=torch.Generator().manual_seed(2))
    out = block(x)
    swapped_mid = x + block.attn(layer_norm(x, block.ln2))
    swapped = swapped_mid + block.mlp(layer_norm(swapped_mid, block.ln1))
    post_mid = layer_norm(x + block.attn(x), block.ln1)
    post = layer_norm(post_mid + block.mlp(post_mid), block.ln2)
    assert (out - swapped).abs().max() > 1e-2
    assert (out - post).abs().max() > 1e-2


def test_block_registers_its_sublayers() -> None:
    block = make_block()
    names = {name for name, _ in block.named_parameters()}
    assert {"ln1.w", "ln1.b", "ln2.w", "ln2.b", "attn.W_Q", "attn.W_O", "mlp.W_in"} <= names
    assert isinstance(block.ln1, LayerNorm)
    assert block.ln1 is not block.ln2


class GatedMLP(nn.Module):
    """A user-written GLU-style MLP: ``out = (relu(x W_gate) * (x W_up)) W_down``."""

    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.W_gate = nn.Parameter(0.3 * torch.randn(d_model, d_mlp, generator=g))
        self.W_up = nn.Parameter(0.3 * torch.randn(d_model, d_mlp, generator=g))
        self.W_down = nn.Parameter(0.3 * torch.randn(d_mlp, d_model, generator=g))

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        out: Tensor = (torch.relu(x @ self.W_gate) * (x @ self.W_up)) @ self.W_down
        return out


class PrefixMeanAttention(nn.Module):
    """A user-written parameter-free causal mixer: position p gets the mean of x[:p + 1]."""

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[None, :, None]
        out: Tensor = x.cumsum(dim=1) / counts
        return out


def test_user_modules_drop_in() -> None:
    attn = PrefixMeanAttention()
    mlp = GatedMLP(D_MODEL, 24)
    block = ResidualBlock(D_MODEL, attn, mlp)
    randomise_(block.ln1, 4)
    randomise_(block.ln2, 5)
    assert block.attn is attn
    assert block.mlp is mlp
    assert {"mlp.W_gate", "mlp.W_up", "mlp.W_down"} <= dict(block.named_parameters()).keys()

    x = torch.randn(2, 6, D_MODEL, generator=torch.Generator().manual_seed(6), requires_grad=True)
    out = block(x)
    # Written out with no reference to block.attn / block.mlp at all.
    h1 = layer_norm(x, block.ln1)
    resid_mid = x + h1.cumsum(dim=1) / torch.arange(1, 7, dtype=x.dtype)[None, :, None]
    h2 = layer_norm(resid_mid, block.ln2)
    expected = resid_mid + (torch.relu(h2 @ mlp.W_gate) * (h2 @ mlp.W_up)) @ mlp.W_down
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)

    out.square().sum().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_dropout_only_in_train_mode() -> None:
    block = make_block(dropout=0.5)
    x = torch.randn(2, 5, D_MODEL, generator=torch.Generator().manual_seed(7))

    block.eval()
    first, second = block(x), block(x)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    torch.testing.assert_close(first, pre_ln_reference(block, x), atol=ATOL, rtol=RTOL)

    block.train()
    torch.manual_seed(8)
    trained = block(x)
    assert (trained - first).abs().max() > 1e-2
    # Dropout acts on each sublayer's output before it is added, in this order.
    torch.manual_seed(8)
    resid_mid = x + F.dropout(block.attn(layer_norm(x, block.ln1)), 0.5, training=True)
    expected = resid_mid + F.dropout(block.mlp(layer_norm(resid_mid, block.ln2)), 0.5, True)
    torch.testing.assert_close(trained, expected, atol=ATOL, rtol=RTOL)


class Zero(nn.Module):
    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return torch.zeros_like(x)


def test_dropout_never_touches_the_residual_stream() -> None:
    block = ResidualBlock(D_MODEL, Zero(), Zero(), dropout=0.9).train()
    x = torch.randn(3, 4, D_MODEL, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)


def test_zero_dropout_train_equals_eval() -> None:
    block = make_block(dropout=0.0)
    x = torch.randn(2, 3, D_MODEL, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(block.train()(x), block.eval()(x), atol=0, rtol=0)


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 2.0])
def test_bad_dropout_is_rejected(dropout: float) -> None:
    with pytest.raises(
        ValueError, match=rf"^dropout: expected a probability in \[0, 1\), got {dropout}"
    ):
        ResidualBlock(D_MODEL, Zero(), Zero(), dropout=dropout)


def test_wrong_width_is_rejected_naming_d_model() -> None:
    block = make_block()
    with pytest.raises(ValueError, match=rf"d_model={D_MODEL}"):
        block(torch.randn(2, 3, D_MODEL + 1))


def test_a_kv_cache_is_passed_to_the_attention_only_when_given() -> None:
    """Fed in two pieces through a cache, the block gives the whole-sequence output (the
    MLP and LayerNorms are position-wise); without one, attn(x) is called as before."""
    block = make_block()
    x = torch.randn(2, 7, D_MODEL, generator=torch.Generator().manual_seed(2))
    cache = KVCache(max_pos=7)
    pieces = torch.cat([block(x[:, :4], kv_cache=cache), block(x[:, 4:], kv_cache=cache)], 1)
    torch.testing.assert_close(pieces, block(x), atol=ATOL, rtol=RTOL)
    assert cache.length == 7


def test_block_hook_points_see_the_residual_stream_and_sublayer_outputs() -> None:
    block = make_block()
    x = torch.randn(2, 5, D_MODEL, generator=torch.Generator().manual_seed(3))
    seen: dict[str, Tensor] = {}
    for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
        getattr(block, f"hook_{name}").register_forward_hook(
            lambda module, inputs, output, name=name: seen.__setitem__(name, output)
        )
    out = block(x)
    assert torch.equal(seen["resid_pre"], x)
    torch.testing.assert_close(seen["attn_out"], block.attn(layer_norm(x, block.ln1)))
    torch.testing.assert_close(seen["resid_mid"], x + seen["attn_out"])
    torch.testing.assert_close(seen["mlp_out"], block.mlp(layer_norm(seen["resid_mid"], block.ln2)))
    assert torch.equal(seen["resid_post"], out)
