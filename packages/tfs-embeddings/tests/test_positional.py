"""Unit and property tests of LearnedPositionalEmbedding and SinusoidalPositionalEncoding.

References: ``W_pos[:pos]`` repeated over the batch (learned), and the formula of Vaswani et
al. (2017), "Attention Is All You Need", section 3.5, evaluated here with ``math.sin`` and
``math.cos`` one entry at a time (sinusoidal). Tolerances: lookups are exact; the sinusoid
table is built in float64 and rounded to float32, so it is compared at atol 1e-6 (float32
spacing near 1 is 6e-8) and linear maps applied to it at atol 1e-5.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from tfs_embeddings import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

pytestmark = pytest.mark.usefixtures("intra_op_threads")

PositionalModule = LearnedPositionalEmbedding | SinusoidalPositionalEncoding


def _sinusoid_reference(n_ctx: int, d_model: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d_model)), PE[p, 2i+1] = cos(same), in float64."""
    rows = []
    for p in range(n_ctx):
        row = []
        for j in range(d_model):
            angle = p / 10000 ** (2 * (j // 2) / d_model)
            row.append(math.sin(angle) if j % 2 == 0 else math.cos(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def _rotation(k: int, d_model: int) -> Tensor:
    """The block-diagonal M_k with PE[p + k] = PE[p] @ M_k (even d_model), in float64.

    Per pair (sin wp, cos wp): sin(w(p+k)) = sin(wp) cos(wk) + cos(wp) sin(wk) and
    cos(w(p+k)) = cos(wp) cos(wk) - sin(wp) sin(wk), a rotation by the angle wk.
    """
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(d_model // 2):
        wk = k / 10000 ** (2 * i / d_model)
        c, s = math.cos(wk), math.sin(wk)
        m[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]])
    return m


def _tokens(batch: int, pos: int, seed: int = 0) -> Tensor:
    return torch.randint(0, 50, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _make(kind: str, n_ctx: int, d_model: int) -> PositionalModule:
    if kind == "learned":
        return LearnedPositionalEmbedding(n_ctx=n_ctx, d_model=d_model)
    return SinusoidalPositionalEncoding(n_ctx=n_ctx, d_model=d_model)


KINDS = ["learned", "sinusoidal"]


# ----------------------------------------------------------------------------- both modules


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (5, 3), (2, 8), (1, 1), (4, 1)])
def test_returns_w_pos_prefix_broadcast_over_batch(kind: str, batch: int, pos: int) -> None:
    torch.manual_seed(0)
    module = _make(kind, n_ctx=8, d_model=6)
    out = module(_tokens(batch, pos))
    assert out.shape == (batch, pos, 6)
    expected = module.W_pos.detach()[:pos].unsqueeze(0).repeat(batch, 1, 1)
    torch.testing.assert_close(out, expected, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_token_values_are_ignored(kind: str) -> None:
    module = _make(kind, n_ctx=8, d_model=6)
    a = module(_tokens(2, 5, seed=0))
    b = module(torch.zeros(2, 5, dtype=torch.long))
    torch.testing.assert_close(a, b, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pos", [9, 20])
def test_more_positions_than_n_ctx_raise(kind: str, pos: int) -> None:
    module = _make(kind, n_ctx=8, d_model=6)
    message = f"tokens: expected at most n_ctx=8 positions, got {pos}"
    with pytest.raises(ValueError, match=re.escape(message)):
        module(_tokens(2, pos))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("offset", "pos"), [(0, 8), (3, 5), (7, 1), (5, 2)])
def test_offset_selects_the_rows_after_the_cached_positions(
    kind: str, offset: int, pos: int
) -> None:
    """Positions offset .. offset + pos - 1: the slice of one whole-sequence lookup."""
    module = _make(kind, n_ctx=8, d_model=6)
    whole = module(_tokens(2, offset + pos))
    torch.testing.assert_close(
        module(_tokens(2, pos), offset), whole[:, offset:], atol=0.0, rtol=0.0
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("offset", "pos", "message"),
    [
        (6, 3, "offset: expected offset + pos <= n_ctx=8, got offset=6 and pos=3"),
        (8, 1, "offset: expected offset + pos <= n_ctx=8, got offset=8 and pos=1"),
        (-1, 2, "offset: expected an int >= 0, got -1"),
    ],
)
def test_offset_past_n_ctx_or_negative_raises(
    kind: str, offset: int, pos: int, message: str
) -> None:
    module = _make(kind, n_ctx=8, d_model=6)
    with pytest.raises(ValueError, match=re.escape(message)):
        module(_tokens(1, pos), offset)


@pytest.mark.parametrize("kind", KINDS)
def test_float_tokens_raise_type_error(kind: str) -> None:
    module = _make(kind, n_ctx=8, d_model=6)
    with pytest.raises(TypeError, match="tokens"):
        module(torch.zeros(2, 3))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n_ctx", "d_model", "name"), [(0, 4, "n_ctx"), (4, 0, "d_model")])
def test_non_positive_sizes_raise(kind: str, n_ctx: int, d_model: int, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}: expected a positive int, got 0"):
        _make(kind, n_ctx=n_ctx, d_model=d_model)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_mutated(kind: str) -> None:
    module = _make(kind, n_ctx=8, d_model=6)
    tokens = _tokens(2, 5)
    tokens_before = tokens.clone()
    table_before = module.W_pos.detach().clone()
    module(tokens).sum()
    assert torch.equal(tokens, tokens_before)
    assert torch.equal(module.W_pos.detach(), table_before)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    n_ctx=st.integers(1, 24),
    d_model=st.integers(1, 12),
    data=st.data(),
)
def test_output_shapes_property(batch: int, n_ctx: int, d_model: int, data: st.DataObject) -> None:
    pos = data.draw(st.integers(1, n_ctx), label="pos")
    tokens = torch.zeros(batch, pos, dtype=torch.long)
    for kind in KINDS:
        module = _make(kind, n_ctx=n_ctx, d_model=d_model)
        out = module(tokens)
        assert out.shape == (batch, pos, d_model)
        assert torch.equal(out[-1], module.W_pos.detach()[:pos])
    too_long = torch.zeros(batch, n_ctx + 1, dtype=torch.long)
    for kind in KINDS:
        with pytest.raises(ValueError, match=f"n_ctx={n_ctx}"):
            _make(kind, n_ctx=n_ctx, d_model=d_model)(too_long)


# ----------------------------------------------------------------------------- learned


def test_learned_w_pos_is_a_parameter_in_state_dict() -> None:
    module = LearnedPositionalEmbedding(n_ctx=8, d_model=6)
    assert isinstance(module.W_pos, nn.Parameter)
    assert module.W_pos.requires_grad
    assert {name: tuple(p.shape) for name, p in module.named_parameters()} == {"W_pos": (8, 6)}
    state = module.state_dict()
    assert set(state) == {"W_pos"}
    other = LearnedPositionalEmbedding(n_ctx=8, d_model=6)
    other.load_state_dict(state)
    assert torch.equal(other.W_pos, module.W_pos)


def test_learned_gradient_reaches_only_the_positions_used() -> None:
    module = LearnedPositionalEmbedding(n_ctx=8, d_model=6)
    upstream = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1))
    torch.autograd.backward((module(_tokens(3, 5)) * upstream).sum())
    grad = module.W_pos.grad
    assert grad is not None
    torch.testing.assert_close(grad[:5], upstream.sum(0), atol=1e-6, rtol=1e-6)
    assert torch.count_nonzero(grad[5:]) == 0


@pytest.mark.parametrize("init_std", [0.02, 0.01])
def test_learned_init_std(init_std: float) -> None:
    # 1e5 draws: tolerance 2% on the std and 0.03 init_std on the mean, ~9 standard errors.
    torch.manual_seed(0)
    w = LearnedPositionalEmbedding(n_ctx=400, d_model=250, init_std=init_std).W_pos.detach()
    assert w.std().item() == pytest.approx(init_std, rel=0.02)
    assert abs(w.mean().item()) < 0.03 * init_std


# ----------------------------------------------------------------------------- sinusoidal


@pytest.mark.parametrize(("n_ctx", "d_model"), [(40, 8), (40, 7), (12, 1), (300, 16)])
def test_sinusoid_matches_the_paper_formula(n_ctx: int, d_model: int) -> None:
    module = SinusoidalPositionalEncoding(n_ctx=n_ctx, d_model=d_model)
    assert module.W_pos.dtype == torch.float32
    expected = _sinusoid_reference(n_ctx, d_model).float()
    torch.testing.assert_close(module.W_pos, expected, atol=1e-6, rtol=0.0)


def test_sinusoid_first_rows_by_hand() -> None:
    # p = 0: sin 0 = 0 in even columns, cos 0 = 1 in odd ones.
    # p = 1, column pair 0 (frequency 1): sin 1, cos 1.
    table = SinusoidalPositionalEncoding(n_ctx=2, d_model=4).W_pos
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(table[1, :2], torch.tensor([math.sin(1.0), math.cos(1.0)]))
    torch.testing.assert_close(table[1, 2:], torch.tensor([math.sin(0.01), math.cos(0.01)]))


def test_sinusoid_odd_d_model_ends_with_a_sine() -> None:
    n_ctx, d_model = 30, 5
    module = SinusoidalPositionalEncoding(n_ctx=n_ctx, d_model=d_model)
    out = module(_tokens(2, n_ctx))
    assert out.shape == (2, n_ctx, d_model)
    last = torch.tensor([math.sin(p / 10000 ** (4 / 5)) for p in range(n_ctx)])
    torch.testing.assert_close(module.W_pos[:, -1], last, atol=1e-6, rtol=0.0)


def test_sinusoid_values_lie_in_minus_one_one() -> None:
    table = SinusoidalPositionalEncoding(n_ctx=2048, d_model=64).W_pos
    assert table.abs().max().item() <= 1.0
    # Every row has unit norm per (sin, cos) pair, so it is never all zeros.
    pairs = table.reshape(2048, 32, 2)
    torch.testing.assert_close(pairs.pow(2).sum(-1), torch.ones(2048, 32), atol=1e-6, rtol=0.0)


def test_sinusoid_w_pos_is_a_non_persistent_buffer() -> None:
    module = SinusoidalPositionalEncoding(n_ctx=8, d_model=6)
    assert list(module.parameters()) == []
    assert "W_pos" in dict(module.named_buffers())
    assert "W_pos" not in module.state_dict()
    module.load_state_dict({}, strict=True)  # nothing is expected from a checkpoint


def test_sinusoid_buffer_moves_with_to_dtype() -> None:
    module = SinusoidalPositionalEncoding(n_ctx=8, d_model=6)
    before = module.W_pos.clone()
    module.to(torch.float64)
    assert module.W_pos.dtype == torch.float64
    out = module(_tokens(2, 5))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[0], before[:5].double(), atol=0.0, rtol=0.0)


@pytest.mark.parametrize("k", [1, 3, 17])
def test_sinusoid_offset_is_a_fixed_rotation(k: int) -> None:
    # Vaswani et al. 3.5: "for any fixed offset k, PE[pos+k] can be represented as a linear
    # function of PE[pos]". Explicitly: one block-diagonal rotation M_k serves every p.
    n_ctx, d_model = 64, 16
    table = SinusoidalPositionalEncoding(n_ctx=n_ctx, d_model=d_model).W_pos.double()
    shifted = table[: n_ctx - k] @ _rotation(k, d_model)
    torch.testing.assert_close(shifted, table[k:], atol=1e-5, rtol=0.0)
    # The rotation is orthogonal, so distances between positions depend on the offset only.
    m = _rotation(k, d_model)
    torch.testing.assert_close(m @ m.T, torch.eye(d_model, dtype=torch.float64))


def test_sinusoid_offset_map_found_by_least_squares() -> None:
    # Without assuming the form of M_k: fit one linear map from PE[p] to PE[p + k] over all
    # 56 positions (56 equations per output column, 16 unknowns). The sinusoid table fits it
    # to float32 precision; a random table of the same shape does not (the control that
    # shows the check can fail).
    n_ctx, d_model, k = 64, 16, 8
    table = SinusoidalPositionalEncoding(n_ctx=n_ctx, d_model=d_model).W_pos.double()
    fit = torch.linalg.lstsq(table[: n_ctx - k], table[k:]).solution
    residual = (table[: n_ctx - k] @ fit - table[k:]).abs().max().item()
    assert residual < 1e-5

    torch.manual_seed(0)
    random_table = torch.randn(n_ctx, d_model, dtype=torch.float64)
    fit = torch.linalg.lstsq(random_table[: n_ctx - k], random_table[k:]).solution
    random_residual = (random_table[: n_ctx - k] @ fit - random_table[k:]).abs().max().item()
    assert random_residual > 0.5


def test_sinusoid_has_no_trainable_state() -> None:
    module = SinusoidalPositionalEncoding(n_ctx=8, d_model=6)
    out = module(_tokens(2, 5))
    assert not out.requires_grad
