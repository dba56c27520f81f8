"""Unit and property tests of tfs_attention.MultiHeadAttention.

The references are torch's own attention (F.scaled_dot_product_attention and
nn.MultiheadAttention) fed with this module's per-head weights under the explicit mapping
written out in ``_to_linear_in`` and ``_to_linear_out``. Tolerance throughout: fp32,
atol = rtol = 1e-5 (values are O(1), so this is a few hundred ulps of headroom and far below
any real mistake such as a wrong scale, a transposed head or a missing bias).
"""

from __future__ import annotations

import copy
import inspect
import re

import jaxtyping
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from tfs_attention import KVCache, MultiHeadAttention

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL = 1e-5
RTOL = 1e-5


# ----------------------------------------------------------------------------- helpers


def _make(
    d_model: int,
    n_heads: int,
    d_head: int | None = None,
    causal: bool = True,
    *,
    seed: int = 0,
    dropout: float = 0.0,
) -> MultiHeadAttention:
    """A module with weights of std 1/sqrt(d_model) (peaked patterns) and non-zero biases.

    The default init (std 0.02, zero biases) gives nearly uniform patterns and hides bias
    mistakes, so reference comparisons use these larger random values instead.
    """
    torch.manual_seed(seed)
    attn = MultiHeadAttention(d_model, n_heads, d_head, causal, dropout=dropout)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for weight in (attn.W_Q, attn.W_K, attn.W_V, attn.W_O):
            weight.copy_(torch.randn(weight.shape, generator=gen) / d_model**0.5)
        for bias in (attn.b_Q, attn.b_K, attn.b_V, attn.b_O):
            bias.copy_(torch.randn(bias.shape, generator=gen) * 0.5)
    return attn


def _x(batch: int, pos: int, d_model: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, pos, d_model, generator=gen)


def _to_linear_in(W: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-head input weight [head, d_model, d_head] -> nn.Linear weight [head*d_head, d_model].

    nn.Linear computes x @ weight.T, and torch's attention splits its projected width into
    heads as contiguous blocks of d_head. So row h*d_head + e of the Linear weight is column
    e of W[h]: weight[h*d_head + e, d] = W[h, d, e], bias[h*d_head + e] = b[h, e].
    """
    n_heads, d_model, d_head = W.shape
    return W.permute(0, 2, 1).reshape(n_heads * d_head, d_model), b.reshape(n_heads * d_head)


def _to_linear_out(W_O: Tensor) -> Tensor:
    """W_O [head, d_head, d_model] -> nn.Linear weight [d_model, head*d_head].

    The heads' outputs z_h are concatenated as [z_0 | z_1 | ...] and then projected:
    out = z_cat @ weight.T, so weight[d, h*d_head + e] = W_O[h, e, d].
    """
    n_heads, d_head, d_model = W_O.shape
    return W_O.reshape(n_heads * d_head, d_model).T


def _sdpa_reference(
    attn: MultiHeadAttention,
    x: Tensor,
    *,
    is_causal: bool = False,
    allowed: Tensor | None = None,
) -> Tensor:
    """Attention built from F.linear + F.scaled_dot_product_attention with mapped weights.

    ``allowed`` is a bool mask broadcastable to [batch, head, dest, src], True = may attend.
    """
    batch, pos, _ = x.shape
    n_heads, d_head = attn.n_heads, attn.d_head

    def project(W: Tensor, b: Tensor) -> Tensor:
        weight, bias = _to_linear_in(W, b)
        return F.linear(x, weight, bias).view(batch, pos, n_heads, d_head).transpose(1, 2)

    q, k, v = project(attn.W_Q, attn.b_Q), project(attn.W_K, attn.b_K), project(attn.W_V, attn.b_V)
    # SDPA's default scale is 1/sqrt(q.shape[-1]) = 1/sqrt(d_head).
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=is_causal)
    z_cat = z.transpose(1, 2).reshape(batch, pos, n_heads * d_head)
    return F.linear(z_cat, _to_linear_out(attn.W_O), attn.b_O)


def _torch_mha(attn: MultiHeadAttention) -> nn.MultiheadAttention:
    """An nn.MultiheadAttention (eval mode) holding ``attn``'s weights; needs
    n_heads * d_head == d_model, the only layout torch's module supports.

    nn.MultiheadAttention stacks the Q, K, V nn.Linear weights of _to_linear_in row-wise
    into in_proj_weight [3*d_model, d_model] (each block: row h*d_head + e = W_X[h, :, e])
    and its out_proj is the nn.Linear of _to_linear_out (weight[d, h*d_head + e] = W_O[h, e, d]).
    Its heads split the width into contiguous d_head blocks, as ours are laid out here.
    """
    ref = nn.MultiheadAttention(attn.d_model, attn.n_heads, bias=True, batch_first=True)
    with torch.no_grad():
        blocks = [
            _to_linear_in(W, b)
            for W, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V))
        ]
        ref.in_proj_weight.copy_(torch.cat([w for w, _ in blocks]))
        assert ref.in_proj_bias is not None
        ref.in_proj_bias.copy_(torch.cat([b for _, b in blocks]))
        ref.out_proj.weight.copy_(_to_linear_out(attn.W_O))
        ref.out_proj.bias.copy_(attn.b_O)
    return ref.eval()


def _allowed(causal: bool, mask: Tensor) -> Tensor:
    """(dest, src) visibility [batch, 1, dest, src] from causality and a [batch, pos] mask."""
    pos = mask.shape[1]
    allowed = mask[:, None, None, :].expand(-1, 1, pos, -1)
    if causal:
        allowed = allowed & torch.ones(pos, pos, dtype=torch.bool).tril()
    return allowed


# ------------------------------------------------------------ equality with references


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    ("batch", "pos", "d_model", "n_heads", "d_head"),
    [
        (3, 5, 16, 4, None),  # batch != pos, default d_head = 4
        (2, 1, 16, 4, None),  # a single position
        (4, 7, 12, 3, 5),  # explicit d_head, n_heads * d_head = 15 != d_model = 12
        (1, 6, 8, 1, None),  # one head
    ],
)
def test_matches_scaled_dot_product_attention(
    causal: bool, batch: int, pos: int, d_model: int, n_heads: int, d_head: int | None
) -> None:
    attn = _make(d_model, n_heads, d_head, causal)
    x = _x(batch, pos, d_model)
    expected = _sdpa_reference(attn, x, is_causal=causal)
    torch.testing.assert_close(attn(x), expected, atol=ATOL, rtol=RTOL)


def test_single_position_writes_its_own_value() -> None:
    # With one position the pattern is exactly 1, so out = (x W_V[h] + b_V[h]) W_O[h] summed + b_O.
    attn = _make(8, 2, causal=False)
    x = _x(3, 1, 8)
    v = torch.einsum("bpd,hde->bphe", x, attn.W_V) + attn.b_V
    expected = torch.einsum("bphe,hed->bpd", v, attn.W_O) + attn.b_O
    torch.testing.assert_close(attn(x), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_padding", [False, True])
def test_matches_torch_multihead_attention(causal: bool, with_padding: bool) -> None:
    d_model, n_heads, batch, pos = 16, 4, 3, 6
    attn = _make(d_model, n_heads, causal=causal)
    ref = _torch_mha(attn)
    attn.eval()

    x = _x(batch, pos, d_model)
    # nn.MultiheadAttention's bool masks mean the opposite of ours: True = may NOT attend.
    causal_block = torch.ones(pos, pos, dtype=torch.bool).triu(1) if causal else None
    mask: Tensor | None = None
    key_padding: Tensor | None = None
    if with_padding:
        # Right padding, first position always visible so no row is empty (MHA gives NaN there).
        lengths = torch.tensor([pos, 2, 4])
        mask = torch.arange(pos)[None, :] < lengths[:, None]
        key_padding = ~mask
    expected, _ = ref(
        x, x, x, attn_mask=causal_block, key_padding_mask=key_padding, need_weights=False
    )
    torch.testing.assert_close(attn(x, mask), expected, atol=ATOL, rtol=RTOL)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    pos=st.integers(1, 8),
    n_heads=st.integers(1, 4),
    head_multiple=st.integers(1, 6),
    d_head=st.none() | st.integers(1, 6),
    causal=st.booleans(),
    scale=st.sampled_from([0.1, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_references_property(
    batch: int,
    pos: int,
    n_heads: int,
    head_multiple: int,
    d_head: int | None,
    causal: bool,
    scale: float,
    seed: int,
) -> None:
    """For every drawn (batch, pos, d_model, n_heads, d_head) and input scale, the output
    equals F.scaled_dot_product_attention, and nn.MultiheadAttention too where its layout
    allows (n_heads * d_head == d_model), under the weight mapping above. fp32, atol = rtol =
    1e-5 (ATOL/RTOL) at unit scale; inputs up to 4x the unit scale keep the values O(10).
    The scores grow with the square of the input scale, and their rounding with them (the
    two sides sum in different orders): atol grows as scale^2 above 1 (1.5e-5 was seen at
    scale 4, pos 7, one head)."""
    d_model = n_heads * head_multiple
    attn = _make(d_model, n_heads, d_head, causal=causal, seed=seed)
    x = scale * _x(batch, pos, d_model, seed=seed)
    out = attn(x)
    assert out.shape == (batch, pos, d_model)
    atol = ATOL * max(1.0, scale) ** 2
    torch.testing.assert_close(
        out, _sdpa_reference(attn, x, is_causal=causal), atol=atol, rtol=RTOL
    )
    if attn.n_heads * attn.d_head == d_model:
        causal_block = torch.ones(pos, pos, dtype=torch.bool).triu(1) if causal else None
        expected, _ = _torch_mha(attn)(x, x, x, attn_mask=causal_block, need_weights=False)
        torch.testing.assert_close(out, expected, atol=atol, rtol=RTOL)


# ------------------------------------------------------------------- attention_mask


@pytest.mark.parametrize("causal", [True, False])
def test_attention_mask_matches_reference_with_combined_mask(causal: bool) -> None:
    d_model, n_heads, batch, pos = 12, 3, 4, 6
    attn = _make(d_model, n_heads, causal=causal)
    x = _x(batch, pos, d_model)
    gen = torch.Generator().manual_seed(7)
    mask = torch.rand(batch, pos, generator=gen) < 0.6
    mask[:, 0] = True  # every destination keeps a visible source in this test
    allowed = _allowed(causal, mask)
    expected = _sdpa_reference(attn, x, allowed=allowed)
    torch.testing.assert_close(attn(x, mask), expected, atol=ATOL, rtol=RTOL)


def test_all_true_mask_equals_no_mask() -> None:
    attn = _make(8, 2)
    x = _x(2, 5, 8)
    torch.testing.assert_close(attn(x, torch.ones(2, 5, dtype=torch.bool)), attn(x), atol=0, rtol=0)


@pytest.mark.parametrize("causal", [True, False])
def test_fully_masked_rows_write_b_O_without_nan(causal: bool) -> None:
    d_model, n_heads, pos = 8, 2, 5
    attn = _make(d_model, n_heads, causal=causal)
    x = _x(3, pos, d_model).requires_grad_(True)
    mask = torch.tensor(
        [
            [True, True, True, True, True],
            [False, False, False, False, False],  # nothing visible anywhere
            [False, False, True, True, False],  # causal: dests 0 and 1 see no source
        ]
    )
    out = attn(x, mask)

    empty = ~_allowed(causal, mask)[:, 0].any(dim=-1)  # [batch, dest]
    assert bool(empty[1].all())
    assert bool(empty[2, :2].all()) == causal
    assert not out.isnan().any()
    torch.testing.assert_close(out[empty], attn.b_O.expand(int(empty.sum()), -1), atol=0, rtol=0)
    # Rows with a visible source agree with the reference.
    expected = _sdpa_reference(attn, x, allowed=_allowed(causal, mask))
    torch.testing.assert_close(out[~empty], expected[~empty], atol=ATOL, rtol=RTOL)

    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert (x.grad[1] == 0).all()  # a sequence that attends to nothing gets no gradient
    for name, param in attn.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


# ------------------------------------------------------------------------ causality


def test_causal_change_at_j_leaves_earlier_outputs_unchanged() -> None:
    d_model, pos = 16, 7
    attn = _make(d_model, 4, causal=True)
    x = _x(2, pos, d_model)
    out = attn(x)
    for j in range(pos):
        x_changed = x.clone()
        x_changed[:, j] += torch.randn(2, d_model, generator=torch.Generator().manual_seed(j))
        out_changed = attn(x_changed)
        torch.testing.assert_close(out_changed[:, :j], out[:, :j], atol=0, rtol=0)
        assert (out_changed[:, j:] - out[:, j:]).abs().amax(dim=-1).min() > 1e-4


def test_non_causal_change_at_j_changes_earlier_outputs() -> None:
    d_model, pos = 16, 7
    attn = _make(d_model, 4, causal=False)
    x = _x(2, pos, d_model)
    x_changed = x.clone()
    x_changed[:, -1] += 1.0
    diff = (attn(x_changed) - attn(x)).abs().amax(dim=-1)  # [batch, pos]
    assert diff.min() > 1e-4


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    pos=st.integers(1, 6),
    n_heads=st.integers(1, 4),
    head_multiple=st.integers(1, 4),
    j_fraction=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**16),
)
def test_property_shape_and_causality(
    batch: int, pos: int, n_heads: int, head_multiple: int, j_fraction: float, seed: int
) -> None:
    d_model = n_heads * head_multiple
    attn = _make(d_model, n_heads, causal=True, seed=seed)
    x = _x(batch, pos, d_model, seed=seed)
    out = attn(x)
    assert out.shape == (batch, pos, d_model)
    assert out.dtype == x.dtype

    j = int(j_fraction * pos)
    x_changed = x.clone()
    x_changed[:, j] += 1.0
    out_changed = attn(x_changed)
    torch.testing.assert_close(out_changed[:, :j], out[:, :j], atol=0, rtol=0)
    assert (out_changed[:, j] - out[:, j]).abs().amax() > 0


# ------------------------------------------------------------ construction and errors


def test_d_head_defaults_to_d_model_over_n_heads() -> None:
    attn = MultiHeadAttention(d_model=24, n_heads=6)
    assert attn.d_head == 4
    assert attn.W_Q.shape == (6, 24, 4)
    assert attn.W_O.shape == (6, 4, 24)
    explicit = MultiHeadAttention(d_model=24, n_heads=5, d_head=7)
    assert explicit.d_head == 7


def test_parameter_names_and_shapes() -> None:
    attn = MultiHeadAttention(d_model=12, n_heads=3, d_head=5)
    shapes = {name: tuple(p.shape) for name, p in attn.named_parameters()}
    assert shapes == {
        "W_Q": (3, 12, 5),
        "W_K": (3, 12, 5),
        "W_V": (3, 12, 5),
        "W_O": (3, 5, 12),
        "b_Q": (3, 5),
        "b_K": (3, 5),
        "b_V": (3, 5),
        "b_O": (12,),
    }


def test_n_heads_not_dividing_d_model_raises() -> None:
    with pytest.raises(ValueError, match=r"n_heads: .*d_model=10.*got 3"):
        MultiHeadAttention(d_model=10, n_heads=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_model": 0, "n_heads": 1}, r"d_model: expected a positive int, got 0"),
        ({"d_model": -4, "n_heads": 2}, r"d_model: expected a positive int, got -4"),
        ({"d_model": 8, "n_heads": 0}, r"n_heads: expected a positive int, got 0"),
        ({"d_model": 8, "n_heads": -2}, r"n_heads: expected a positive int, got -2"),
        ({"d_model": 8, "n_heads": 2, "d_head": 0}, r"d_head: expected a positive int.*got 0"),
        ({"d_model": 8, "n_heads": 2, "d_head": -1}, r"d_head: expected a positive int.*got -1"),
        ({"d_model": 8, "n_heads": 2, "dropout": -0.1}, r"dropout: .*\[0, 1\), got -0.1"),
        ({"d_model": 8, "n_heads": 2, "dropout": 1.0}, r"dropout: .*\[0, 1\), got 1.0"),
    ],
)
def test_invalid_constructor_arguments_raise(kwargs: dict[str, int | float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(**kwargs)  # type: ignore[arg-type]


def test_x_with_wrong_width_raises() -> None:
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    with pytest.raises(
        ValueError, match=r"x: expected shape \[batch, pos, d_model=8\], got \(2, 3, 7\)"
    ):
        attn(torch.randn(2, 3, 7))


@pytest.mark.parametrize("shape", [(2, 0, 8), (0, 3, 8)])
def test_empty_batch_or_sequence_raises(shape: tuple[int, int, int]) -> None:
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    with pytest.raises(
        ValueError,
        match=re.escape(f"x: expected at least one sequence and one position, got {shape}"),
    ):
        attn(torch.zeros(shape))


@pytest.mark.parametrize(
    ("mask", "received"),
    [
        (torch.ones(2, 3), r"torch\.float32 \(2, 3\)"),
        (torch.ones(2, 3, dtype=torch.long), r"torch\.int64 \(2, 3\)"),
        (torch.ones(2, 4, dtype=torch.bool), r"torch\.bool \(2, 4\)"),
        (torch.ones(3, 3, dtype=torch.bool), r"torch\.bool \(3, 3\)"),
    ],
)
def test_wrong_mask_dtype_or_shape_raises(mask: Tensor, received: str) -> None:
    attn = MultiHeadAttention(d_model=8, n_heads=2)
    x = torch.randn(2, 3, 8)
    # Under the test suite's runtime checker the annotation catches it first, except a
    # wrong number of source positions, which only the module knows (with a cache, src > pos)
    with pytest.raises((jaxtyping.TypeCheckError, ValueError), match="attention_mask"):
        attn(x, mask)
    # ... and without the checker (as users run it) the module's own check names it.
    unchecked_forward = inspect.unwrap(MultiHeadAttention.forward)
    expected = r"attention_mask: expected a bool tensor of shape \(2, 3\) \[batch, src\], got "
    expected += received
    with pytest.raises(ValueError, match=expected):
        unchecked_forward(attn, x, mask)


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_init_weights_normal_with_init_std_and_zero_biases(init_std: float) -> None:
    # 8 x 512 x 64 = 262,144 entries per weight: the sample std is within ~0.3% of the
    # truth at 2 sigma, so a 2% tolerance is safe, while any fan-in rule applied to the
    # [in, out] layout (kaiming/xavier: std ~ 1/sqrt(512) = 0.044 or 1/sqrt(64) = 0.125)
    # misses it by far more.
    torch.manual_seed(0)
    attn = MultiHeadAttention(d_model=512, n_heads=8, init_std=init_std)
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        weight = getattr(attn, name).detach()
        assert abs(weight.std().item() - init_std) < 0.02 * init_std, name
        assert abs(weight.mean().item()) < 0.01 * init_std, name
        # Normal, not uniform: about 4.6% of a normal lies beyond 2 sigma, none of a
        # uniform with the same std (its edge is at sqrt(3) sigma).
        beyond = (weight.abs() > 2 * init_std).float().mean().item()
        assert 0.04 < beyond < 0.052, name
    for name in ("b_Q", "b_K", "b_V", "b_O"):
        assert (getattr(attn, name) == 0).all(), name


# ------------------------------------------------------- purity, dropout, gradients


def test_forward_does_not_mutate_inputs() -> None:
    attn = _make(8, 2)
    x = _x(2, 4, 8).requires_grad_(True)
    mask = torch.tensor([[True, True, False, True], [True, False, False, False]])
    x_before, mask_before = x.detach().clone(), mask.clone()
    attn(x, mask).sum().backward()
    assert torch.equal(x.detach(), x_before)
    assert torch.equal(mask, mask_before)


def test_dropout_only_in_training() -> None:
    attn = _make(16, 4, dropout=0.5)
    x = _x(2, 8, 16)
    attn.eval()
    first, second = attn(x), attn(x)
    assert torch.equal(first, second)
    torch.testing.assert_close(
        first, _sdpa_reference(attn, x, is_causal=True), atol=ATOL, rtol=RTOL
    )
    attn.train()
    torch.manual_seed(0)
    trained = attn(x)
    assert not torch.allclose(trained, first, atol=1e-3)


def test_zero_dropout_train_equals_eval() -> None:
    attn = _make(16, 4, dropout=0.0)
    x = _x(2, 8, 16)
    attn.train()
    train_out = attn(x)
    attn.eval()
    assert torch.equal(train_out, attn(x))


def test_gradients_reach_every_parameter() -> None:
    attn = _make(12, 3)
    x = _x(2, 5, 12)
    weights = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(1))
    (attn(x) * weights).sum().backward()
    for name, param in attn.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if name == "b_K":
            # q . b_K is the same for every source of a destination, and softmax ignores a
            # constant added to a row, so b_K's gradient is exactly zero in exact arithmetic.
            assert param.grad.abs().max() < 1e-5
        else:
            assert param.grad.abs().max() > 1e-4, name


# --------------------------------------------------------- independent, additive heads


@pytest.mark.parametrize("causal", [True, False])
def test_heads_are_independent_and_additive(causal: bool) -> None:
    # Elhage et al. (2021): out = sum_h A_h x W_V[h] W_O[h] + b_O. Each head's term is the
    # output of a copy whose other heads' W_O are zero, minus b_O; those terms add up.
    n_heads = 4
    attn = _make(16, n_heads, causal=causal)
    x = _x(3, 6, 16)
    total = attn(x) - attn.b_O
    contributions = []
    for h in range(n_heads):
        single = copy.deepcopy(attn)
        with torch.no_grad():
            keep = torch.zeros(n_heads, 1, 1)
            keep[h] = 1.0
            single.W_O.mul_(keep)
        contribution = single(x) - single.b_O
        assert contribution.abs().max() > 1e-3  # every head writes something
        contributions.append(contribution)
    torch.testing.assert_close(torch.stack(contributions).sum(0), total, atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------ hook points


def _recorded(attn: MultiHeadAttention, x: Tensor, mask: Tensor | None = None) -> dict[str, Tensor]:
    """Every hook point's activation in one forward, read with ordinary forward hooks."""
    seen: dict[str, Tensor] = {}
    handles = [
        getattr(attn, name).register_forward_hook(
            lambda module, inputs, output, name=name: seen.__setitem__(name, output)
        )
        for name in ("hook_q", "hook_k", "hook_v", "hook_pattern", "hook_z")
    ]
    attn(x, mask)
    for handle in handles:
        handle.remove()
    return seen


def test_hooks_see_q_k_v_pattern_and_z_with_their_documented_shapes() -> None:
    attn = _make(12, 3, d_head=5)
    x = _x(2, 4, 12)
    seen = _recorded(attn, x)
    for name, W, b in (("hook_q", attn.W_Q, attn.b_Q), ("hook_k", attn.W_K, attn.b_K)):
        expected = torch.einsum("bpd,hde->bphe", x, W) + b  # [batch, pos, head, d_head]
        torch.testing.assert_close(seen[name], expected, atol=ATOL, rtol=RTOL)
    assert seen["hook_v"].shape == seen["hook_z"].shape == (2, 4, 3, 5)
    pattern = seen["hook_pattern"]  # [batch, head, dest, src]
    assert pattern.shape == (2, 3, 4, 4)
    # z_h = A_h v_h, and out = sum_h z_h W_O[h] + b_O.
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, seen["hook_v"])
    torch.testing.assert_close(seen["hook_z"], z, atol=ATOL, rtol=RTOL)
    out = torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O
    torch.testing.assert_close(attn(x), out, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("with_padding", [False, True])
def test_causal_pattern_rows_sum_to_one_and_are_zero_above_the_diagonal(
    with_padding: bool,
) -> None:
    attn = _make(16, 4)
    mask = torch.ones(3, 6, dtype=torch.bool)
    if with_padding:
        mask[1, :2] = False  # left padding: rows 0 and 1 of sequence 1 see nothing
    pattern = _recorded(attn, _x(3, 6, 16), mask)["hook_pattern"]
    sees_something = torch.ones(3, 1, 6, dtype=torch.bool)
    if with_padding:
        sees_something[1, 0, :2] = False
    row_sums = pattern.sum(-1)
    torch.testing.assert_close(row_sums, sees_something.expand(3, 4, 6).float())
    assert torch.equal(pattern.triu(diagonal=1), torch.zeros_like(pattern))
    if with_padding:
        assert pattern[1, :, :, :2].abs().max() == 0  # padding is never a source
    else:
        assert (pattern[..., torch.ones(6, 6, dtype=torch.bool).tril()] > 0).all()


def test_a_hook_that_returns_a_tensor_replaces_the_activation() -> None:
    """Zeroing head 1's pattern removes exactly its term sum_k A[q, k] v_k W_O[1]."""
    attn = _make(16, 4)
    x = _x(2, 5, 16)
    clean = attn(x)

    def ablate_head_1(module: nn.Module, inputs: object, pattern: Tensor) -> Tensor:
        pattern = pattern.clone()
        pattern[:, 1] = 0.0
        return pattern

    handle = attn.hook_pattern.register_forward_hook(ablate_head_1)
    ablated = attn(x)
    handle.remove()
    single = copy.deepcopy(attn)
    with torch.no_grad():
        single.W_O[[0, 2, 3]] = 0.0
    head_1 = single(x) - single.b_O
    torch.testing.assert_close(ablated, clean - head_1, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(attn(x), clean)  # the handle is gone: clean again


def test_hook_points_are_free_identities() -> None:
    """Nothing attached: each hook point hands on the very tensor it was given (no copy) and
    holds no parameters or buffers, so hook points change neither outputs nor state dicts."""
    attn = _make(8, 2)
    t = torch.randn(3)
    for name in ("hook_q", "hook_k", "hook_v", "hook_pattern", "hook_z"):
        hook = getattr(attn, name)
        assert hook(t) is t
        assert not list(hook.parameters())
        assert not list(hook.buffers())
    assert sorted(attn.state_dict()) == ["W_K", "W_O", "W_Q", "W_V", "b_K", "b_O", "b_Q", "b_V"]


# ------------------------------------------------------------------ backend="sdpa"


def _backends(causal: bool = True) -> tuple[MultiHeadAttention, MultiHeadAttention]:
    manual = _make(16, 4, causal=causal)
    sdpa = copy.deepcopy(manual)
    sdpa.backend = "sdpa"
    return manual, sdpa


def _outputs_and_grads(attn: MultiHeadAttention, x: Tensor, mask: Tensor | None) -> list[Tensor]:
    x = x.clone().requires_grad_(True)
    out = attn(x, mask)
    grads = torch.autograd.grad(out.square().sum(), [x, *attn.parameters()])
    return [out, *grads]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("with_padding", [False, True])
def test_sdpa_backend_equals_the_manual_path(causal: bool, with_padding: bool) -> None:
    """Outputs and every gradient, including destinations that see no source."""
    manual, sdpa = _backends(causal)
    mask = None
    if with_padding:
        mask = torch.ones(3, 6, dtype=torch.bool)
        mask[1, :3] = False
        mask[2, :] = False  # a sequence with nothing to attend to
    x = _x(3, 6, 16)
    for a, b in zip(
        _outputs_and_grads(manual, x, mask), _outputs_and_grads(sdpa, x, mask), strict=True
    ):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_sdpa_backend_with_a_kv_cache_equals_the_manual_path() -> None:
    manual, sdpa = _backends()
    x = _x(2, 7, 16)
    outs = []
    for attn in (manual, sdpa):
        cache = KVCache(max_pos=7)
        outs.append(torch.cat([attn(x[:, :4], kv_cache=cache), attn(x[:, 4:5], kv_cache=cache),
                               attn(x[:, 5:], kv_cache=cache)], 1))  # fmt: skip
    torch.testing.assert_close(outs[0], outs[1], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(outs[0], manual(x), atol=ATOL, rtol=RTOL)


def test_sdpa_backend_falls_back_while_the_pattern_is_hooked() -> None:
    """SDPA never forms the pattern; with a hook on hook_pattern the manual path runs, so
    the hook sees the pattern and the output is unchanged."""
    manual, sdpa = _backends()
    x = _x(2, 5, 16)
    seen: list[Tensor] = []
    handle = sdpa.hook_pattern.register_forward_hook(lambda m, i, out: seen.append(out))
    torch.testing.assert_close(sdpa(x), manual(x), atol=ATOL, rtol=RTOL)
    handle.remove()
    assert len(seen) == 1
    assert seen[0].shape == (2, 4, 5, 5)


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"backend: expected one of \['manual', 'sdpa'\], got 'x'"):
        MultiHeadAttention(8, 2, backend="x")
    assert "backend='sdpa'" in repr(MultiHeadAttention(8, 2, backend="sdpa"))
