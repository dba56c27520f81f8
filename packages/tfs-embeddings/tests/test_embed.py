"""Unit tests of tfs_embeddings.Embed.

Reference: ``F.embedding(tokens, W_E)``, torch's own lookup fed with this module's table
(no remapping: both store ``[d_vocab, d_model]``). A lookup copies values, so outputs and
gradients are compared exactly (atol = rtol = 0) unless a test says otherwise.

Under the test hook (conftest.py) a wrong dtype or rank is rejected by jaxtyping before the
body runs; ``inspect.unwrap(Embed.forward)`` reaches the body's own checks, which are what a
user without the hook sees. Every test runs at one and at two intra-op threads.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from tfs_embeddings import Embed

pytestmark = pytest.mark.usefixtures("intra_op_threads")


def _tokens(batch: int, pos: int, d_vocab: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, d_vocab, (batch, pos), generator=gen)


def _unchecked_forward(embed: Embed, tokens: Tensor) -> Tensor:
    """The forward body without the runtime type checker in front of it."""
    out: Tensor = inspect.unwrap(Embed.forward)(embed, tokens)
    return out


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (5, 3), (1, 1), (4, 1), (1, 7)])
def test_matches_f_embedding(batch: int, pos: int) -> None:
    torch.manual_seed(0)
    embed = Embed(d_vocab=11, d_model=6)
    tokens = _tokens(batch, pos, 11)
    out = embed(tokens)
    assert out.shape == (batch, pos, 6)
    torch.testing.assert_close(out, F.embedding(tokens, embed.W_E), atol=0.0, rtol=0.0)


def test_every_id_selects_its_row() -> None:
    # All ids, including both ends of the range, in one [1, d_vocab] sequence.
    torch.manual_seed(0)
    embed = Embed(d_vocab=9, d_model=4)
    out = embed(torch.arange(9)[None])
    torch.testing.assert_close(out[0], embed.W_E, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.int8])
def test_signed_integer_dtypes_give_the_same_lookup(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    embed = Embed(d_vocab=7, d_model=3)
    tokens = _tokens(2, 5, 7)
    torch.testing.assert_close(
        embed(tokens.to(dtype)), F.embedding(tokens, embed.W_E), atol=0.0, rtol=0.0
    )


def test_uint8_tokens_are_ids_not_a_mask() -> None:
    # Regression: W_E[uint8 tensor] is boolean-mask indexing in torch. Tokens of shape
    # [d_vocab, d_model] used to select a flat vector instead of looking up rows.
    # (The jaxtyping Int annotation rejects unsigned dtypes, so this runs the body directly.)
    torch.manual_seed(0)
    embed = Embed(d_vocab=4, d_model=3)
    tokens = torch.tensor([[1, 0, 2], [0, 3, 1], [1, 1, 1], [2, 2, 0]])
    out = _unchecked_forward(embed, tokens.to(torch.uint8))
    torch.testing.assert_close(out, F.embedding(tokens, embed.W_E), atol=0.0, rtol=0.0)


def test_empty_sequence() -> None:
    embed = Embed(d_vocab=5, d_model=3)
    assert embed(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, 3)


# ----------------------------------------------------------------------------- init


@pytest.mark.parametrize("init_std", [0.02, 0.1])
def test_init_is_normal_with_init_std(init_std: float) -> None:
    # 400 x 250 = 1e5 draws: the sample std has relative standard error 1/sqrt(2n) = 0.22%,
    # and the mean has standard error init_std/sqrt(n) = 0.0032 init_std.
    # Tolerances 2% (std) and 0.03 init_std (mean) are about 9 standard errors.
    torch.manual_seed(0)
    embed = Embed(d_vocab=400, d_model=250, init_std=init_std)
    w = embed.W_E.detach()
    assert w.std().item() == pytest.approx(init_std, rel=0.02)
    assert abs(w.mean().item()) < 0.03 * init_std


def test_default_init_std_is_gpt2() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    assert embed.init_std == 0.02


def test_w_e_is_the_only_parameter() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    names = {name: tuple(p.shape) for name, p in embed.named_parameters()}
    assert names == {"W_E": (10, 4)}
    assert set(embed.state_dict()) == {"W_E"}


# ----------------------------------------------------------------------------- errors


def test_float_tokens_raise_type_error() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    with pytest.raises(TypeError, match="tokens"):
        embed(torch.zeros(2, 3))
    with pytest.raises(
        TypeError, match=r"tokens: expected an integer tensor, got dtype torch\.float32"
    ):
        _unchecked_forward(embed, torch.zeros(2, 3))


def test_bool_tokens_raise_type_error() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    with pytest.raises(
        TypeError, match=r"tokens: expected an integer tensor, got dtype torch\.bool"
    ):
        _unchecked_forward(embed, torch.zeros(2, 3, dtype=torch.bool))


def test_non_tensor_tokens_raise_type_error() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    # Rejected by the checker of forward (or of the shared validate_tokens) under the hook,
    # by validate_tokens' own isinstance test without it: a TypeError naming tokens either way.
    with pytest.raises(TypeError, match="tokens"):
        embed([[1, 2]])


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_wrong_rank_tokens_raise(shape: tuple[int, ...]) -> None:
    embed = Embed(d_vocab=10, d_model=4)
    tokens = torch.zeros(shape, dtype=torch.long)
    with pytest.raises(TypeError, match="tokens"):  # jaxtyping.TypeCheckError under the hook
        embed(tokens)
    with pytest.raises(
        ValueError, match=re.escape(f"tokens: expected shape [batch, pos], got {shape}")
    ):
        _unchecked_forward(embed, tokens)


@pytest.mark.parametrize(("bad", "position"), [(-1, 0), (10, 4), (-7, 2), (123, 1)])
def test_out_of_range_ids_raise_value_error(bad: int, position: int) -> None:
    embed = Embed(d_vocab=10, d_model=4)
    tokens = torch.tensor([[0, 9, 3, 5, 1]])
    tokens[0, position] = bad
    with pytest.raises(
        ValueError, match=rf"tokens: expected ids in \[0, d_vocab=10\), got id {bad}"
    ):
        embed(tokens)


def test_ids_at_both_ends_of_the_range_are_accepted() -> None:
    embed = Embed(d_vocab=10, d_model=4)
    assert embed(torch.tensor([[0, 9]])).shape == (1, 2, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"d_vocab": 0, "d_model": 4}, "d_vocab: expected a positive int, got 0"),
        ({"d_vocab": -3, "d_model": 4}, "d_vocab: expected a positive int, got -3"),
        ({"d_vocab": 10, "d_model": 0}, "d_model: expected a positive int, got 0"),
        ({"d_vocab": 10, "d_model": -1}, "d_model: expected a positive int, got -1"),
    ],
)
def test_non_positive_sizes_raise_value_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Embed(**kwargs)


# ----------------------------------------------------------------------------- gradients


def test_gradient_reaches_only_the_rows_used() -> None:
    torch.manual_seed(0)
    embed = Embed(d_vocab=8, d_model=5)
    tokens = torch.tensor([[1, 4, 4], [7, 1, 4]])  # rows 1, 4, 7 used; 4 three times
    upstream = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(1))
    torch.autograd.backward((embed(tokens) * upstream).sum())
    grad = embed.W_E.grad
    assert grad is not None

    w_ref = embed.W_E.detach().clone().requires_grad_(True)
    torch.autograd.backward((F.embedding(tokens, w_ref) * upstream).sum())
    # Rows that appear several times sum their upstream gradients; the summation order
    # may differ from F.embedding's backward, hence a float tolerance here.
    torch.testing.assert_close(grad, w_ref.grad, atol=1e-6, rtol=1e-6)

    unused = [0, 2, 3, 5, 6]
    assert torch.count_nonzero(grad[unused]) == 0
    assert torch.all(grad[[1, 4, 7]].abs().sum(-1) > 0)
    torch.testing.assert_close(grad[4], upstream[0, 1] + upstream[0, 2] + upstream[1, 2])


def test_gradient_is_reproducible_where_threads_split_the_work(
    compare_fast_op: Callable[..., None],
) -> None:
    """4,096 ids from 50, so each row of W_E sums about 80 positions' gradients, width 64.
    Against ``one_hot(tokens) @ W_E`` (atol = rtol = 1e-5: the sums run in another order),
    and two backward passes give the same bits. (``W_E[tokens]``, whose backward adds the
    rows of repeated ids in whatever order the threads reach them, gave 20 different
    gradients in 20 passes at two threads.)"""
    embed = Embed(d_vocab=50, d_model=64)
    compare_fast_op(
        lambda tokens, W_E: functional_call(embed, {"W_E": W_E}, (tokens,)),
        lambda tokens, W_E: F.one_hot(tokens, 50).to(W_E.dtype) @ W_E,
        (_tokens(32, 128, 50), embed.W_E),
        rtol=1e-5,
        atol=1e-5,
    )


def test_inputs_are_not_mutated() -> None:
    torch.manual_seed(0)
    embed = Embed(d_vocab=10, d_model=4)
    tokens = _tokens(3, 6, 10)
    tokens_before = tokens.clone()
    w_before = embed.W_E.detach().clone()
    out = embed(tokens)
    torch.autograd.backward(out.sum())
    assert torch.equal(tokens, tokens_before)
    assert torch.equal(embed.W_E.detach(), w_before)


def test_output_does_not_alias_w_e() -> None:
    # Writing into the returned activations must not change the table.
    torch.manual_seed(0)
    embed = Embed(d_vocab=10, d_model=4)
    w_before = embed.W_E.detach().clone()
    with torch.no_grad():
        embed(torch.tensor([[2, 3]])).fill_(7.0)
    assert torch.equal(embed.W_E.detach(), w_before)
