"""MLP against a reference built from torch's nn.Linear and F.gelu / F.relu.

Weight mapping (ours stores weights [in, out] and multiplies on the right; nn.Linear stores
[out, in]): ``linear_in.weight = W_in.T``, ``linear_in.bias = b_in``,
``linear_out.weight = W_out.T``, ``linear_out.bias = b_out``.

Tolerance (float32): atol 1e-5, rtol 1e-5 for outputs and gradients; the two sides run the
same products through different kernels (matmul vs addmm), measured differences ~1e-6.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from tfs_mlp import MLP

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL, RTOL = 1e-5, 1e-5

REFERENCE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def _make_mlp(d_model: int, d_mlp: int, activation: str, seed: int) -> MLP:
    """An MLP with random O(1) weights and non-zero biases, so every term matters and the
    pre-activations reach the non-linear part of the activation."""
    mlp = MLP(d_model, d_mlp, activation)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mlp.W_in.copy_(torch.randn(d_model, d_mlp, generator=g) / d_model**0.5)
        mlp.b_in.copy_(torch.randn(d_mlp, generator=g))
        mlp.W_out.copy_(torch.randn(d_mlp, d_model, generator=g) / d_mlp**0.5)
        mlp.b_out.copy_(torch.randn(d_model, generator=g))
    return mlp


class ReferenceMLP(nn.Module):
    """nn.Linear -> activation -> nn.Linear, loaded from an MLP under the mapping above."""

    def __init__(self, mlp: MLP) -> None:
        super().__init__()
        self.linear_in = nn.Linear(mlp.d_model, mlp.d_mlp)
        self.linear_out = nn.Linear(mlp.d_mlp, mlp.d_model)
        self.act = REFERENCE_ACTIVATIONS[mlp.activation]
        with torch.no_grad():
            self.linear_in.weight.copy_(mlp.W_in.T)
            self.linear_in.bias.copy_(mlp.b_in)
            self.linear_out.weight.copy_(mlp.W_out.T)
            self.linear_out.bias.copy_(mlp.b_out)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear_out(self.act(self.linear_in(x)))
        return out


@pytest.mark.parametrize("activation", ["gelu", "relu"])
@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (2, 1), (1, 1), (4, 7)])
def test_matches_nn_linear_reference(activation: str, batch: int, pos: int) -> None:
    mlp = _make_mlp(6, 24, activation, seed=1)
    x = torch.randn(batch, pos, 6, generator=torch.Generator().manual_seed(2))
    out = mlp(x)
    assert out.shape == (batch, pos, 6)
    torch.testing.assert_close(out, ReferenceMLP(mlp)(x), atol=ATOL, rtol=RTOL)


def test_gelu_and_relu_give_different_outputs() -> None:
    # The activation argument is really used: same weights, different activation.
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    out_gelu = _make_mlp(6, 24, "gelu", seed=1)(x)
    out_relu = _make_mlp(6, 24, "relu", seed=1)(x)
    assert (out_gelu - out_relu).abs().max() > 1e-2


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_gradients_match_nn_linear_reference(activation: str) -> None:
    mlp = _make_mlp(5, 12, activation, seed=3)
    ref = ReferenceMLP(mlp)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 5, generator=g)
    upstream = torch.randn(3, 4, 5, generator=g)
    x_ours = x.clone().requires_grad_()
    x_ref = x.clone().requires_grad_()
    (mlp(x_ours) * upstream).sum().backward()
    (ref(x_ref) * upstream).sum().backward()
    assert x_ours.grad is not None
    assert x_ref.grad is not None
    torch.testing.assert_close(x_ours.grad, x_ref.grad, atol=ATOL, rtol=RTOL)
    pairs = [
        (mlp.W_in.grad, ref.linear_in.weight.grad, True),
        (mlp.b_in.grad, ref.linear_in.bias.grad, False),
        (mlp.W_out.grad, ref.linear_out.weight.grad, True),
        (mlp.b_out.grad, ref.linear_out.bias.grad, False),
    ]
    for ours, theirs, transposed in pairs:
        assert ours is not None
        assert theirs is not None
        torch.testing.assert_close(ours, theirs.T if transposed else theirs, atol=ATOL, rtol=RTOL)


def test_is_position_wise() -> None:
    mlp = _make_mlp(6, 16, "gelu", seed=5)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 7, 6, generator=g)
    perm = torch.randperm(7, generator=g)
    torch.testing.assert_close(mlp(x[:, perm]), mlp(x)[:, perm], atol=ATOL, rtol=RTOL)
    # Each position alone gives the same result as inside the sequence.
    for p in range(7):
        torch.testing.assert_close(mlp(x[:, p : p + 1]), mlp(x)[:, p : p + 1], atol=ATOL, rtol=RTOL)


def test_changing_one_position_changes_only_that_position() -> None:
    mlp = _make_mlp(6, 16, "relu", seed=7)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(8))
    x2 = x.clone()
    x2[:, 2] += 1.0
    diff = (mlp(x2) - mlp(x)).abs().amax(dim=(0, 2))
    assert diff[2] > 1e-3
    assert diff[torch.tensor([0, 1, 3, 4])].max() < 1e-6


def test_unknown_activation_lists_allowed_names() -> None:
    with pytest.raises(
        ValueError, match=r"activation: expected one of \['gelu', 'relu'\], got 'swish'"
    ):
        MLP(4, 8, "swish")


@pytest.mark.parametrize(
    ("d_model", "d_mlp", "bad"),
    [
        (0, 8, "d_model"),
        (-3, 8, "d_model"),
        (4, 0, "d_mlp"),
        (4, -1, "d_mlp"),
        (True, 8, "d_model"),
    ],
)
def test_non_positive_sizes_raise(d_model: int, d_mlp: int, bad: str) -> None:
    got = d_model if bad == "d_model" else d_mlp
    with pytest.raises(ValueError, match=rf"{bad}: expected a positive int, got {got!r}"):
        MLP(d_model, d_mlp)


def test_negative_init_std_raises() -> None:
    with pytest.raises(ValueError, match=r"init_std: expected a non-negative float, got -0\.5"):
        MLP(4, 8, init_std=-0.5)


def test_wrong_input_width_raises() -> None:
    mlp = MLP(4, 8)
    with pytest.raises(
        ValueError, match=r"x: expected shape \[batch, pos, d_model=4\], got \(2, 3, 5\)"
    ):
        mlp(torch.randn(2, 3, 5))


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_init_std_and_zero_biases(init_std: float) -> None:
    torch.manual_seed(0)
    mlp = MLP(256, 1024, init_std=init_std)
    # 262,144 samples per matrix: the sample std is within ~0.2% of the true one; 3% margin.
    for weight in (mlp.W_in, mlp.W_out):
        assert abs(weight.std().item() / init_std - 1) < 0.03
        assert abs(weight.mean().item()) < 0.03 * init_std
    assert mlp.W_in.shape == (256, 1024)
    assert mlp.W_out.shape == (1024, 256)
    assert torch.equal(mlp.b_in, torch.zeros(1024))
    assert torch.equal(mlp.b_out, torch.zeros(256))


def test_default_init_std_is_gpt2s() -> None:
    torch.manual_seed(0)
    mlp = MLP(128, 512)
    assert mlp.init_std == 0.02
    assert abs(mlp.W_in.std().item() / 0.02 - 1) < 0.03


def test_reset_parameters_restores_init() -> None:
    mlp = _make_mlp(64, 256, "gelu", seed=0)
    mlp.reset_parameters()
    assert torch.equal(mlp.b_in, torch.zeros(256))
    assert torch.equal(mlp.b_out, torch.zeros(64))
    assert abs(mlp.W_in.std().item() / 0.02 - 1) < 0.05


def test_parameter_names_and_shapes() -> None:
    mlp = MLP(4, 8)
    shapes = {name: tuple(p.shape) for name, p in mlp.named_parameters()}
    assert shapes == {"W_in": (4, 8), "b_in": (8,), "W_out": (8, 4), "b_out": (4,)}
    assert "d_model=4, d_mlp=8, activation='gelu'" in repr(mlp)


def test_does_not_mutate_input() -> None:
    mlp = _make_mlp(6, 16, "relu", seed=9)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(10)).requires_grad_()
    before = x.detach().clone()
    params_before = {name: p.detach().clone() for name, p in mlp.named_parameters()}
    mlp(x).sum().backward()
    assert torch.equal(x.detach(), before)
    for name, p in mlp.named_parameters():
        assert torch.equal(p.detach(), params_before[name])


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(min_value=1, max_value=4),
    pos=st.integers(min_value=1, max_value=6),
    d_model=st.integers(min_value=1, max_value=8),
    d_mlp=st.integers(min_value=1, max_value=16),
    activation=st.sampled_from(["gelu", "relu"]),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_shapes_and_reference_property(
    batch: int, pos: int, d_model: int, d_mlp: int, activation: str, seed: int
) -> None:
    mlp = _make_mlp(d_model, d_mlp, activation, seed=seed)
    x = torch.randn(batch, pos, d_model, generator=torch.Generator().manual_seed(seed + 1))
    out = mlp(x)
    assert out.shape == (batch, pos, d_model)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ReferenceMLP(mlp)(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_hook_points_see_the_hidden_activations_and_can_replace_them(activation: str) -> None:
    """hook_pre is the reference's linear_in output, hook_post its activation; a hook that
    returns a tensor replaces the activation for the rest of the forward."""
    mlp = _make_mlp(6, 10, activation, seed=0)
    reference = ReferenceMLP(mlp)
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(1))
    seen: dict[str, Tensor] = {}
    handles = [
        mlp.hook_pre.register_forward_hook(lambda m, i, out: seen.__setitem__("pre", out)),
        mlp.hook_post.register_forward_hook(lambda m, i, out: seen.__setitem__("post", out)),
    ]
    mlp(x)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        pre = reference.linear_in(x)
        torch.testing.assert_close(seen["pre"], pre, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(seen["post"], reference.act(pre), atol=ATOL, rtol=RTOL)

    # Zero-ablating every hidden unit leaves only b_out.
    handle = mlp.hook_post.register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    torch.testing.assert_close(mlp(x), mlp.b_out.expand(2, 3, 6))
    handle.remove()
    assert mlp.hook_pre(x) is x  # nothing attached: the same tensor, no copy
    torch.testing.assert_close(mlp(x), reference(x), atol=ATOL, rtol=RTOL)
