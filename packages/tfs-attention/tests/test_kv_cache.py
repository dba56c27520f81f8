"""Tests of tfs_attention.KVCache and of MultiHeadAttention fed through it.

The reference is the same module run once on the whole sequence: with causal attention,
feeding the positions in pieces through a cache must give the same outputs (fp32, atol =
rtol = 1e-5: the two paths sum the same terms in different groupings).
"""

from __future__ import annotations

import inspect
import itertools

import jaxtyping
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tfs_attention import KVCache, MultiHeadAttention

pytestmark = pytest.mark.usefixtures("intra_op_threads")

ATOL = RTOL = 1e-5


def _attention(d_model: int = 12, n_heads: int = 3, *, causal: bool = True) -> MultiHeadAttention:
    """A module whose weights and biases are all N(0, 0.5): peaked patterns, visible biases."""
    attn = MultiHeadAttention(d_model, n_heads, causal=causal)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in attn.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=gen) * 0.5)
    return attn


def _pieces(attn: MultiHeadAttention, x: Tensor, cuts: list[int], **kwargs: Tensor) -> Tensor:
    """Feed x[:, a:b] for consecutive cut points through one cache; concatenate the outputs."""
    cache = KVCache(max_pos=x.shape[1])
    bounds = [0, *cuts, x.shape[1]]
    mask = kwargs.get("attention_mask")
    outputs = []
    for a, b in itertools.pairwise(bounds):
        piece_mask = None if mask is None else mask[:, :b]
        outputs.append(attn(x[:, a:b], piece_mask, kv_cache=cache))
    assert cache.length == x.shape[1]
    return torch.cat(outputs, dim=1)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    pos=st.integers(1, 12),
    data=st.data(),
)
def test_pieces_through_the_cache_equal_one_forward(
    batch: int, pos: int, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, pos - 1), max_size=4))) if pos > 1 else []
    attn = _attention()
    x = torch.randn(batch, pos, 12, generator=torch.Generator().manual_seed(pos))
    torch.testing.assert_close(_pieces(attn, x, cuts), attn(x), atol=ATOL, rtol=RTOL)


def test_one_token_at_a_time_with_a_padding_mask() -> None:
    attn = _attention()
    x = torch.randn(2, 6, 12, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, :2] = False  # left padding in row 0
    expected = attn(x, mask)
    got = _pieces(attn, x, [1, 2, 3, 4, 5], attention_mask=mask)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_non_causal_last_piece_sees_every_position() -> None:
    """Without the causal mask a piece attends to all positions cached so far, so only the
    last piece, which sees the whole sequence, matches the one-forward output."""
    attn = _attention(causal=False)
    x = torch.randn(2, 7, 12, generator=torch.Generator().manual_seed(1))
    got = _pieces(attn, x, [4])
    torch.testing.assert_close(got[:, 4:], attn(x)[:, 4:], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(got[:, :4], attn(x)[:, :4], atol=1e-3)


def test_append_keeps_what_it_was_given_and_returns_all_positions() -> None:
    """Layout [batch, head, pos, d_head]: appending concatenates along pos (dim 2)."""
    cache = KVCache(max_pos=5)
    k1, v1 = torch.randn(2, 4, 3, 6), torch.randn(2, 4, 3, 6)
    k2, v2 = torch.randn(2, 4, 1, 6), torch.randn(2, 4, 1, 6)
    keys, values = cache.append(k1, v1)
    assert torch.equal(keys, k1)
    assert torch.equal(values, v1)
    assert cache.length == 3
    keys, values = cache.append(k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], 2))
    assert torch.equal(values, torch.cat([v1, v2], 2))
    assert cache.length == 4
    assert repr(cache) == "KVCache(max_pos=5, length=4)"
    cache.reset()
    assert cache.length == 0
    keys, _ = cache.append(k2, v2)
    assert torch.equal(keys, k2)


def test_keys_hook_sees_only_the_new_positions() -> None:
    attn = _attention()
    seen: list[tuple[int, ...]] = []
    attn.hook_k.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    cache = KVCache(max_pos=8)
    attn(torch.randn(1, 5, 12), kv_cache=cache)
    attn(torch.randn(1, 1, 12), kv_cache=cache)
    assert seen == [(1, 5, 3, 4), (1, 1, 3, 4)]


def test_a_full_cache_says_so() -> None:
    attn = _attention()
    cache = KVCache(max_pos=4)
    attn(torch.randn(1, 3, 12), kv_cache=cache)
    with pytest.raises(
        ValueError, match=r"kv_cache: holds at most max_pos=4 positions, got 3 cached \+ 2 new"
    ):
        attn(torch.randn(1, 2, 12), kv_cache=cache)
    assert cache.length == 3  # the failed call stored nothing


def test_a_different_batch_or_head_layout_is_rejected() -> None:
    cache = KVCache(max_pos=4)
    cache.append(torch.randn(2, 4, 1, 6), torch.randn(2, 4, 1, 6))
    with pytest.raises(
        ValueError, match=r"keys: expected .* batch, head, d_head = 2, 4, 6 .* got \(3, 4, 1, 6\)"
    ):
        cache.append(torch.randn(3, 4, 1, 6), torch.randn(3, 4, 1, 6))
    # Unequal shapes: the runtime checker catches them first; unchecked, the module does.
    with pytest.raises(jaxtyping.TypeCheckError, match="values"):
        cache.append(torch.randn(2, 4, 1, 6), torch.randn(2, 4, 1, 5))
    with pytest.raises(ValueError, match=r"keys, values: expected equal shapes"):
        inspect.unwrap(KVCache.append)(cache, torch.randn(2, 4, 1, 6), torch.randn(2, 4, 1, 5))


def test_attention_mask_must_cover_the_cached_positions() -> None:
    attn = _attention()
    cache = KVCache(max_pos=8)
    attn(torch.randn(1, 3, 12), kv_cache=cache)
    with pytest.raises(
        ValueError, match=r"attention_mask: expected a bool tensor of shape \(1, 4\)"
    ):
        attn(torch.randn(1, 1, 12), torch.ones(1, 1, dtype=torch.bool), kv_cache=cache)


@pytest.mark.parametrize("max_pos", [0, -1, 2.0, True, None])
def test_max_pos_must_be_a_positive_int(max_pos: object) -> None:
    cache = object.__new__(KVCache)
    with pytest.raises(ValueError, match=rf"max_pos: expected a positive int, got {max_pos!r}"):
        inspect.unwrap(KVCache.__init__)(cache, max_pos)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_pieces_where_autograd_records_nothing_equal_one_forward(mode: type) -> None:
    """There a cached step takes the query, key and value weights laid side by side from the
    cache (``KVCache.keep``) instead of laying them out again: the same outputs."""
    attn = _attention()
    x = torch.randn(2, 9, 12, generator=torch.Generator().manual_seed(3))
    with mode():
        expected = attn(x)
        got = _pieces(attn, x, [4, 5, 7])
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("edit", ["in place", "replaced"])
def test_a_weight_changed_between_steps_reaches_the_next_step(edit: str) -> None:
    """What a cached step keeps from the weights follows them: a head's W_Q zeroed in place
    (as in a patching experiment), or W_Q replaced by a new parameter. Only queries change,
    so the cached keys and values stay valid and the last step equals a fresh forward."""
    attn = _attention()
    x = torch.randn(1, 6, 12, generator=torch.Generator().manual_seed(4))
    cache = KVCache(max_pos=6)
    with torch.no_grad():
        attn(x[:, :5], kv_cache=cache)
        if edit == "in place":
            attn.W_Q[1].zero_()
        else:
            attn.W_Q = torch.nn.Parameter(torch.zeros_like(attn.W_Q))
        got = attn(x[:, 5:], kv_cache=cache)
        expected = attn(x)[:, 5:]
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


def test_keep_computes_once_until_a_source_changes() -> None:
    cache = KVCache(max_pos=4)
    w = torch.randn(3)
    calls: list[Tensor] = []

    def double() -> Tensor:
        calls.append(w * 2)
        return calls[-1]

    first = cache.keep("double", [w], double)
    assert cache.keep("double", [w], double) is first
    assert len(calls) == 1
    w.add_(1.0)  # written in place: its version counter moves
    assert torch.equal(cache.keep("double", [w], double), w * 2)
    assert len(calls) == 2
    w = w.double()  # another tensor
    cache.keep("double", [w], double)
    assert len(calls) == 3
    cache.reset()
    cache.keep("double", [w], double)
    assert len(calls) == 4


def test_weights_made_in_inference_mode_are_laid_out_at_every_step() -> None:
    """Inference tensors have no version counter to tell a changed weight by, so a cache
    keeps nothing derived from them; generation with such a model still works."""
    with torch.inference_mode():
        attn = _attention()
        x = torch.randn(1, 6, 12, generator=torch.Generator().manual_seed(6))
        expected = attn(x)
        got = _pieces(attn, x, [3, 4, 5])
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    cache = KVCache(max_pos=4)
    calls: list[int] = []
    for _ in range(2):
        cache.keep("weights", [attn.W_Q], lambda: calls.append(1))
    assert len(calls) == 2


def test_a_cache_filled_in_inference_mode_goes_on_outside_it() -> None:
    """``Decoder.generate`` fills its caches under ``torch.inference_mode()``; a cache so
    filled can still be appended to outside it (an inference tensor cannot be written
    there, so the cache writes to copies)."""
    attn = _attention()
    x = torch.randn(1, 6, 12, generator=torch.Generator().manual_seed(5))
    cache = KVCache(max_pos=6)
    with torch.inference_mode():
        first = attn(x[:, :4], kv_cache=cache)
    with torch.no_grad():
        rest = attn(x[:, 4:], kv_cache=cache)
        expected = attn(x)
    torch.testing.assert_close(torch.cat([first, rest], 1), expected, atol=ATOL, rtol=RTOL)
