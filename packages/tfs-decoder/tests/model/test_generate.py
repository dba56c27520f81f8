"""Sampling and generation: the filtered next-token distribution (temperature, top-k,
top-p), the frequencies sample_next_token draws with, and the loop of Decoder.generate."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from tfs_attention import KVCache
from tfs_decoder import Decoder, DecoderConfig, sample_next_token
from tfs_decoder.generate import filtered_probs, generate_tokens, top_k_mask, top_p_mask

# init_std 0.3 spreads the logits (std ~1.5), so greedy choices are not near-ties.
SMALL = DecoderConfig(
    d_vocab=50, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_layers=2, n_ctx=16, init_std=0.3
)


def build(config: DecoderConfig = SMALL, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(config)


def prompt_for(batch: int, pos: int, seed: int = 0, d_vocab: int = SMALL.d_vocab) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, d_vocab, (batch, pos), generator=g)


def support(probs: Tensor) -> set[int]:
    """Indices of the non-zero entries of a 1-D distribution."""
    return {int(i) for i in torch.nonzero(probs).flatten()}


def reference_filtered(
    row: list[float], temperature: float, top_k: int | None, top_p: float | None
) -> list[float]:
    """The definition for one row, in float64 Python: scale by 1/T; keep the logits >= the
    k-th largest; softmax; keep the most likely tokens until their mass reaches p (plus any
    tied with the last one kept); renormalise. p = 1 keeps everything."""
    z = [x / temperature for x in row]
    if top_k is not None:
        kth = sorted(z, reverse=True)[min(top_k, len(z)) - 1]
        z = [x if x >= kth else -math.inf for x in z]
    m = max(z)
    e = [math.exp(x - m) for x in z]
    q = [x / sum(e) for x in e]
    if top_p is not None and top_p < 1:
        mass, smallest = 0.0, 1.0
        for x in sorted(q, reverse=True):
            if mass >= top_p:
                break
            smallest, mass = x, mass + x
        q = [x if x >= smallest else 0.0 for x in q]
        q = [x / sum(q) for x in q]
    return q


def greedy_reference(model: Decoder, prompt: Tensor, steps: int, n_ctx: int) -> Tensor:
    """Arg max of a full forward over the last n_ctx tokens, appended one at a time."""
    sequence = prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = model(sequence[:, -n_ctx:])[:, -1, :]
            sequence = torch.cat([sequence, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return sequence


class CountingModel(nn.Module):
    """A stand-in language model: whatever the context, predicts (last token + 1) mod d_vocab
    with a logit margin of 50 (so sampling at T=1 picks it with probability 1 - 1e-20).
    Records the context length of every forward."""

    def __init__(self, d_vocab: int) -> None:
        super().__init__()
        self.d_vocab = d_vocab
        self.context_lengths: list[int] = []

    def forward(self, tokens: Tensor) -> Tensor:
        self.context_lengths.append(tokens.shape[1])
        return 50.0 * F.one_hot((tokens + 1) % self.d_vocab, self.d_vocab).float()


# ---------------------------------------------------------------------------------------
# The filtered distribution


@pytest.mark.parametrize("temperature", [0.25, 1.0, 2.7])
def test_temperature_divides_the_logits(temperature: float) -> None:
    """filtered_probs == softmax(logits / T), against exp/sum in float64, atol 1e-6."""
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(3, 11, generator=g)
    before = logits.clone()
    scaled = logits.double() / temperature
    expected = torch.exp(scaled - scaled.max(dim=-1, keepdim=True).values)
    expected = (expected / expected.sum(dim=-1, keepdim=True)).float()
    got = filtered_probs(logits, temperature=temperature)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert torch.equal(logits, before)  # the input is not mutated


def test_temperature_zero_is_the_arg_max_and_draws_nothing() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0, 2.0], [5.0, -5.0, 0.0, 4.9]])
    probs = filtered_probs(logits, temperature=0.0)
    # Tied maxima (row 0): the first index, as torch.argmax.
    assert torch.equal(probs, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    tokens = sample_next_token(logits, temperature=0.0, top_k=2, top_p=0.1, generator=g)
    assert tokens.tolist() == [1, 0]
    assert tokens.dtype == torch.int64
    assert torch.equal(g.get_state(), state)  # greedy consumes no randomness


@pytest.mark.parametrize("k", [1, 2, 5, 10, 11, 12, 1000])
def test_top_k_keeps_exactly_the_k_largest(k: int) -> None:
    """Support == the k largest logits of each row (all of them when k >= d_vocab), and
    the values are softmax(logits / T) over that support, atol 1e-6."""
    d_vocab, temperature = 11, 1.3
    g = torch.Generator().manual_seed(1)
    # Distinct values in a different order on each row.
    logits = torch.stack([torch.randperm(d_vocab, generator=g) for _ in range(3)]).float() * 0.7
    probs = filtered_probs(logits, temperature=temperature, top_k=k)
    for row in range(3):
        largest = torch.argsort(logits[row], descending=True)[: min(k, d_vocab)]
        assert support(probs[row]) == {int(i) for i in largest}
        masked = torch.full((d_vocab,), -math.inf)
        masked[largest] = logits[row, largest] / temperature
        torch.testing.assert_close(probs[row], F.softmax(masked, dim=-1), atol=1e-6, rtol=0)


def test_top_k_keeps_ties_at_the_boundary() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert top_k_mask(logits, 1).tolist() == [[True, False, False, False, False], [True] * 5]
    # The 2nd and 3rd largest tie: k=2 keeps both, as does k=3.
    assert top_k_mask(logits, 2)[0].tolist() == [True, False, True, True, False]
    assert top_k_mask(logits, 3)[0].tolist() == [True, False, True, True, False]
    assert top_k_mask(logits, 4)[0].tolist() == [True, True, True, True, False]
    probs = filtered_probs(logits, top_k=2)
    torch.testing.assert_close(probs[1], torch.full((5,), 0.2), atol=1e-7, rtol=0)


# The listed probabilities are exact binary fractions and so are all their partial sums, so
# these boundaries are decided by the rule, not by rounding. Sorted: 1/2, 1/4, 1/8, 5/64,
# 3/64, cumulative 1/2, 3/4, 7/8, 61/64, 1. Stored out of order so the sort is exercised.
DYADIC = [0.125, 0.5, 0.046875, 0.25, 0.078125]
JUST_ABOVE = {
    x: torch.nextafter(torch.tensor(x), torch.tensor(2.0)).item() for x in (0.5, 0.75, 0.875)
}


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (1e-9, {1}),  # a tiny p keeps exactly the most likely token
        (0.25, {1}),
        (0.5, {1}),  # 1/2 reaches 0.5: inclusive, the crossing token ends the set
        (JUST_ABOVE[0.5], {1, 3}),
        (0.75, {1, 3}),
        (JUST_ABOVE[0.75], {1, 3, 0}),
        (0.875, {1, 3, 0}),
        (JUST_ABOVE[0.875], {1, 3, 0, 4}),
        (61 / 64, {1, 3, 0, 4}),
        (0.96, {0, 1, 2, 3, 4}),
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_is_the_smallest_set_reaching_p(top_p: float, kept: set[int]) -> None:
    probs = torch.tensor([DYADIC])
    mask = top_p_mask(probs, top_p)
    assert {i for i in range(5) if mask[0, i]} == kept


@pytest.mark.parametrize(
    ("top_p", "n_kept"), [(1e-6, 1), (0.5, 1), (0.8, 2), (0.81, 3), (0.95, 3), (1.0, 4)]
)
def test_top_p_boundaries_on_0_5_0_3_0_15_0_05(top_p: float, n_kept: int) -> None:
    """q = [0.5, 0.3, 0.15, 0.05] in float64. The rule "smallest set whose mass >= p" keeps
    1, 2, 3, 3, 4 tokens at p = 0.5, 0.8, 0.81, 0.95, 1."""
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=torch.float64)
    # The float64 partial sums reach the listed boundaries as the real numbers do.
    cumulative = torch.cumsum(torch.tensor([0.5, 0.3, 0.15], dtype=torch.float64), 0)
    assert cumulative[0] == 0.5
    assert cumulative[1] == 0.8
    assert cumulative[2] >= 0.95
    expected = [1, 3, 0, 2][:n_kept]  # token ids by decreasing probability
    mask = top_p_mask(probs, top_p)
    assert {i for i in range(4) if mask[0, i]} == set(expected)


@pytest.mark.parametrize(("top_p", "kept"), [(0.45, [1]), (0.55, [1, 3]), (0.9, [1, 3, 0])])
def test_top_p_renormalises_the_nucleus(top_p: float, kept: list[int]) -> None:
    q = torch.tensor([0.15, 0.5, 0.05, 0.3])
    probs = filtered_probs(torch.log(q)[None], top_p=top_p)[0]
    expected = torch.zeros(4)
    expected[kept] = q[kept] / q[kept].sum()
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)


def test_top_p_keeps_ties_with_the_crossing_token() -> None:
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.4, 0.2, 0.2, 0.2]])
    # Row 0: 0.25 < 0.3, so the set needs a second token, and all four tie with it.
    assert top_p_mask(probs, 0.3).tolist() == [[True] * 4, [True, False, False, False]]
    assert top_p_mask(probs, 0.4)[1].tolist() == [True, False, False, False]
    assert top_p_mask(probs, 0.45)[1].tolist() == [True] * 4


def test_top_p_one_keeps_every_token_despite_rounding() -> None:
    """In float32 the dominant token's probability rounds to exactly 1, so a cumulative sum
    alone would drop the e^-30 tokens; p = 1 must be the same as no top-p."""
    logits = torch.tensor([[30.0, 0.0, 0.0, -1.0]])
    assert float(torch.softmax(logits, dim=-1)[0, 0]) == 1.0
    probs = filtered_probs(logits, top_p=1.0)
    assert torch.equal(probs, filtered_probs(logits))
    assert support(probs[0]) == {0, 1, 2, 3}


def test_filters_apply_in_order_temperature_top_k_top_p() -> None:
    """T = 2 on logits 2 log q flattens back to q = [0.4, 0.3, 0.2, 0.1]; top-k=3 keeps
    [0.4, 0.3, 0.2] / 0.9; top-p=0.7 then needs 0.444 + 0.333 = 0.778 -> two tokens."""
    q = torch.tensor([0.4, 0.1, 0.3, 0.2])
    probs = filtered_probs(2.0 * torch.log(q)[None], temperature=2.0, top_k=3, top_p=0.7)[0]
    torch.testing.assert_close(probs, torch.tensor([4 / 7, 0.0, 3 / 7, 0.0]), atol=1e-6, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    d_vocab=st.integers(1, 9),
    temperature=st.sampled_from([0.5, 1.0, 2.0]),
    top_k=st.one_of(st.none(), st.integers(1, 10)),
    top_p=st.one_of(st.none(), st.floats(0.01, 1.0)),
)
def test_filtered_probs_matches_the_definition(
    data: st.DataObject,
    d_vocab: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
) -> None:
    """Against reference_filtered (float64, one row at a time), atol 1e-6; integer logits
    make ties frequent. Also: rows sum to 1, and permuting the vocabulary permutes the
    result (no dependence on token order)."""
    rows = data.draw(
        st.lists(st.lists(st.integers(-4, 4), min_size=d_vocab, max_size=d_vocab), min_size=2)
    )
    logits = torch.tensor(rows, dtype=torch.float32)
    probs = filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    expected = torch.tensor(
        [reference_filtered([float(x) for x in r], temperature, top_k, top_p) for r in rows]
    )
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(len(rows)), atol=1e-6, rtol=0)
    perm = torch.randperm(d_vocab, generator=torch.Generator().manual_seed(len(rows)))
    permuted = filtered_probs(logits[:, perm], temperature=temperature, top_k=top_k, top_p=top_p)
    torch.testing.assert_close(permuted, probs[:, perm], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------
# Sampling frequencies


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "expected"),
    [
        # q = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]; top-5 renormalises by 0.96, giving cumulative
        # 0.417, 0.677, 0.833, 0.938: p = 0.85 is crossed by the 4th token.
        (1.0, 5, 0.85, [0.4 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0.1 / 0.9, 0.0, 0.0]),
        # No filtering: q^(1/0.7), renormalised.
        (0.7, None, None, None),
    ],
)
def test_sample_frequencies_match_the_distribution(
    temperature: float, top_k: int | None, top_p: float | None, expected: list[float] | None
) -> None:
    """20000 draws (one seeded call with 20000 rows). Each token's frequency is within 4.5
    binomial standard errors sqrt(q (1 - q) / N) of its probability (a correct sampler
    fails one of 6 such bounds with probability < 1e-4), and filtered-out tokens never
    appear."""
    q = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    if expected is None:
        powered = q ** (1 / temperature)
        expected = (powered / powered.sum()).tolist()
    target = torch.tensor(expected, dtype=torch.float64)
    logits = torch.log(q).float()[None]
    torch.testing.assert_close(
        filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)[0].double(),
        target,
        atol=1e-6,
        rtol=0,
    )
    n = 20_000
    g = torch.Generator().manual_seed(0)
    tokens = sample_next_token(
        logits.expand(n, -1), temperature=temperature, top_k=top_k, top_p=top_p, generator=g
    )
    assert tokens.shape == (n,)
    assert tokens.dtype == torch.int64
    frequencies = torch.bincount(tokens, minlength=6).double() / n
    bound = 4.5 * torch.sqrt(target * (1 - target) / n)
    assert torch.all((frequencies - target).abs() <= bound), (frequencies, target)
    assert torch.all(frequencies[target == 0] == 0)


def test_sample_next_token_is_reproducible_and_accepts_bfloat16() -> None:
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(0)).bfloat16()
    before = logits.clone()
    draws = [
        sample_next_token(logits, top_k=3, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(logits, before)
    in_top_3 = top_k_mask(logits.float(), 3).gather(-1, draws[0][:, None])
    assert bool(in_top_3.all())


# ---------------------------------------------------------------------------------------
# Decoder.generate


@pytest.mark.parametrize(("batch", "pos", "steps"), [(3, 4, 10), (2, 1, 6), (1, 15, 1)])
def test_greedy_generation_is_an_arg_max_loop(batch: int, pos: int, steps: int) -> None:
    model = build()
    prompt = prompt_for(batch, pos)
    before = prompt.clone()
    out = model.generate(prompt, steps, temperature=0.0)
    assert out.shape == (batch, pos + steps)
    assert torch.equal(out, greedy_reference(model, prompt, steps, SMALL.n_ctx))
    assert torch.equal(prompt, before)


@pytest.mark.parametrize(("pos", "steps"), [(20, 6), (10, 12), (16, 3)])
def test_generation_crops_the_context_to_n_ctx(pos: int, steps: int) -> None:
    """A prompt longer than n_ctx = 16, or one that outgrows it, is fed through its last 16
    tokens; the output keeps the whole prompt and every generated token."""
    model = build()
    prompt = prompt_for(2, pos, seed=1)
    out = model.generate(prompt, steps, temperature=0.0)
    assert out.shape == (2, pos + steps)
    assert torch.equal(out[:, :pos], prompt)
    assert torch.equal(out, greedy_reference(model, prompt, steps, SMALL.n_ctx))

    counting = CountingModel(d_vocab=10)
    generate_tokens(counting, prompt % 10, steps, n_ctx=SMALL.n_ctx)
    assert counting.context_lengths == [min(pos + i, SMALL.n_ctx) for i in range(steps)]


# ---------------------------------------------------------------------------------------
# The key/value cache


class RecordingDecoder(nn.Module):
    """Wraps a Decoder and records, per forward, how many tokens were fed and whether a
    cache came along."""

    def __init__(self, model: Decoder) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def forward(self, tokens: Tensor, *, kv_cache: list[KVCache] | None = None) -> Tensor:
        self.calls.append((tokens.shape[1], kv_cache is not None))
        logits: Tensor = self.model(tokens, kv_cache=kv_cache)
        return logits


@pytest.mark.parametrize(
    ("pos", "steps"),
    [(4, 10), (1, 15), (5, 30), (20, 4)],  # within n_ctx = 16, up to it, past it, prompt past it
)
@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 1.0}, {"temperature": 0.8, "top_k": 10, "top_p": 0.9}, {"temperature": 0.0}],
)
def test_cached_and_uncached_generation_give_identical_tokens(
    pos: int, steps: int, sampling: dict[str, Any]
) -> None:
    """The guard against cache-vs-no-cache mismatches: same seed, same tokens, whether the
    sequence stays within n_ctx or outgrows it (where the cache is dropped)."""
    model = build()
    prompt = prompt_for(3, pos, seed=pos)

    def run(use_cache: bool) -> Tensor:
        g = torch.Generator().manual_seed(11)
        return model.generate(prompt, steps, use_cache=use_cache, generator=g, **sampling)

    cached = run(True)
    assert cached.shape == (3, pos + steps)
    assert torch.equal(cached, run(False))


def test_cached_step_logits_equal_the_full_forward() -> None:
    """Prompt of 5, then 11 one-token steps through the cache up to n_ctx = 16: every
    step's logits equal those of a full forward over the sequence so far (fp32, 1e-5)."""
    model = build().eval()
    sequence = prompt_for(2, 5, seed=3)
    cache = model.make_kv_cache()
    with torch.no_grad():
        logits = model(sequence, kv_cache=cache)
        torch.testing.assert_close(logits, model(sequence), atol=1e-5, rtol=1e-5)
        while sequence.shape[1] < SMALL.n_ctx:
            next_token = logits[:, -1].argmax(-1, keepdim=True)
            sequence = torch.cat([sequence, next_token], dim=1)
            logits = model(next_token, kv_cache=cache)
            assert logits.shape == (2, 1, SMALL.d_vocab)
            torch.testing.assert_close(logits[:, 0], model(sequence)[:, -1], atol=1e-5, rtol=1e-5)
        assert all(c.length == SMALL.n_ctx for c in cache)
        with pytest.raises(ValueError, match=r"offset: expected offset \+ pos <= n_ctx=16"):
            model(next_token, kv_cache=cache)  # the cache is full


def test_at_the_context_limit_the_cache_gives_way_to_full_forwards() -> None:
    """n_ctx = 16, prompt 5, 14 new tokens: the prompt once, then one token per step while
    the sequence fits (11 steps, filling the cache to 16), then two full forwards of the
    last 16 tokens without the cache, exactly as uncached generation does."""
    recording = RecordingDecoder(build())
    prompt = prompt_for(2, 5)
    cache = recording.model.make_kv_cache()
    out = generate_tokens(recording, prompt, 14, n_ctx=SMALL.n_ctx, temperature=0.0, kv_cache=cache)
    assert recording.calls == [(5, True)] + [(1, True)] * 11 + [(16, False)] * 2
    assert torch.equal(out, greedy_reference(recording.model, prompt, 14, SMALL.n_ctx))


def test_a_used_cache_is_refused() -> None:
    model = build()
    cache = model.make_kv_cache()
    model(prompt_for(1, 3), kv_cache=cache)
    with pytest.raises(ValueError, match=r"kv_cache: expected an empty cache \(length 0\)"):
        generate_tokens(model, prompt_for(1, 3), 2, n_ctx=16, kv_cache=cache)


def test_custom_attention_generates_without_the_cache() -> None:
    """A block attention that is not a MultiHeadAttention cannot hold a cache: asking for
    one says so and names the way out; use_cache=False works."""

    class NoAttention(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.zeros_like(x)

    torch.manual_seed(0)
    model = Decoder(SMALL, make_attn=lambda c: NoAttention())
    with pytest.raises(
        TypeError,
        match=r"blocks\.0\.attn: expected a MultiHeadAttention .* "
        r"got NoAttention; generate with use_cache=False",
    ):
        model.generate(prompt_for(1, 3), 2)
    assert model.generate(prompt_for(1, 3), 2, use_cache=False).shape == (1, 5)


def test_seeded_generation_is_reproducible() -> None:
    model = build()
    prompt = prompt_for(4, 5)

    def run(seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return model.generate(prompt, 12, temperature=1.0, top_k=20, top_p=0.95, generator=g)

    first = run(7)
    assert first.shape == (4, 17)
    assert torch.equal(first, run(7))
    assert not torch.equal(first, run(8))
    assert int(first.min()) >= 0
    assert int(first.max()) < SMALL.d_vocab


def test_eos_pads_and_stops_when_every_row_has_finished() -> None:
    """Counting model, eos = 5: row 1 emits 5 at once and is then padded (the model would
    say 6, 7, 8), row 0 reaches 5 after four steps; then the loop stops, well before
    max_new_tokens = 10."""
    model = CountingModel(d_vocab=10)
    prompt = torch.tensor([[0, 1], [3, 4]])
    g = torch.Generator().manual_seed(0)
    out = generate_tokens(model, prompt, 10, n_ctx=8, eos_token=5, generator=g)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5], [3, 4, 5, 5, 5, 5]]
    assert len(model.context_lengths) == 4  # one forward per generated position

    # Not every row finishes within max_new_tokens: full length, finished rows padded.
    out = generate_tokens(CountingModel(10), prompt, 3, n_ctx=8, eos_token=5)
    assert out.tolist() == [[0, 1, 2, 3, 4], [3, 4, 5, 5, 5]]

    # An eos inside the prompt does not count as produced.
    out = generate_tokens(CountingModel(10), torch.tensor([[5, 6]]), 3, n_ctx=8, eos_token=5)
    assert out.tolist() == [[5, 6, 7, 8, 9]]


def test_decoder_stops_at_once_when_eos_dominates() -> None:
    model = build()
    eos = 7
    with torch.no_grad():
        model.unembed.b_U[eos] += 100.0
    prompt = prompt_for(3, 4)
    out = model.generate(prompt, 8, eos_token=eos, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 5)
    assert out[:, -1].tolist() == [eos] * 3


def test_zero_new_tokens_returns_a_copy_of_the_prompt() -> None:
    prompt = prompt_for(2, 3).to(torch.int32)
    out = build().generate(prompt, 0)
    assert torch.equal(out, prompt)
    out[0, 0] += 1
    assert not torch.equal(out, prompt)  # not the prompt itself
    assert build().generate(prompt, 2, temperature=0.0).dtype == torch.int32


def test_generation_runs_in_eval_mode_without_grad_and_restores_flags() -> None:
    model = build(dataclasses.replace(SMALL, dropout=0.5))
    model.train()
    model.blocks[0].eval()  # a mixed state must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    seen: list[tuple[bool, bool]] = []

    def record(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        seen.append(
            (any(m.training for m in module.modules()), torch.is_grad_enabled()),
        )

    handle = model.register_forward_pre_hook(record)
    prompt = prompt_for(2, 3)
    out = model.generate(prompt, 5, temperature=0.0)
    handle.remove()
    assert seen == [(False, False)] * 5
    assert not out.requires_grad
    assert {name: m.training for name, m in model.named_modules()} == flags
    # With dropout 0.5 active the greedy path would differ; in eval mode it matches.
    model.eval()
    assert torch.equal(out, greedy_reference(model, prompt, 5, SMALL.n_ctx))

    assert not out.is_inference()  # generated in inference mode, returned as a plain tensor

    # Restored also when generation fails midway (an out-of-vocabulary prompt id).
    model.train()
    with pytest.raises(ValueError, match=r"d_vocab=50\), got id 50"):
        model.generate(torch.tensor([[1, 50]]), 3)
    assert all(m.training for m in model.modules())


def test_generated_tokens_can_be_trained_on() -> None:
    """Generation runs in inference mode; what it returns still works where autograd
    keeps its inputs for backward (an inference tensor would be refused there: the token
    embedding keeps the ids)."""
    model = build()
    tokens = model.generate(prompt_for(2, 3), 4, temperature=0.0)
    loss = F.cross_entropy(model(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    (grad,) = torch.autograd.grad(loss, model.embed.W_E)
    assert grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# Argument errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.5}, r"temperature: expected a finite float >= 0, got -0.5"),
        ({"temperature": math.nan}, r"temperature: expected a finite float >= 0, got nan"),
        ({"temperature": math.inf}, r"temperature: expected a finite float >= 0, got inf"),
        ({"top_k": 0}, r"top_k: expected an int >= 1 or None, got 0"),
        ({"top_k": -3}, r"top_k: expected an int >= 1 or None, got -3"),
        ({"top_p": 0.0}, r"top_p: expected a float in \(0, 1\] or None, got 0.0"),
        ({"top_p": -0.1}, r"top_p: expected a float in \(0, 1\] or None, got -0.1"),
        ({"top_p": 1.5}, r"top_p: expected a float in \(0, 1\] or None, got 1.5"),
        ({"top_p": math.nan}, r"top_p: expected a float in \(0, 1\] or None, got nan"),
    ],
)
def test_bad_sampling_arguments_are_rejected(kwargs: dict[str, float], match: str) -> None:
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=match):
        sample_next_token(logits, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        build().generate(prompt_for(1, 2), 3, **kwargs)  # type: ignore[arg-type]


def test_bad_argument_types_and_shapes_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"top_k: expected an int >= 1 or None, got bool True"):
        sample_next_token(torch.zeros(2, 5), top_k=True)
    with pytest.raises(ValueError, match=r"logits: expected shape \[batch, d_vocab >= 1\]"):
        sample_next_token(torch.zeros(2, 0))
    with pytest.raises(TypeError, match="logits"):  # 1-D logits: jaxtyping's check under tests
        sample_next_token(torch.zeros(5))


@pytest.mark.parametrize(
    ("pos", "max_new_tokens", "eos_token", "match"),
    [
        (3, -1, None, r"max_new_tokens: expected an int >= 0, got -1"),
        (0, 3, None, r"tokens: expected shape \[batch, pos >= 1\], got \(2, 0\)"),
        (3, 3, -1, r"eos_token: expected an id >= 0, got -1"),
        (3, 3, 50, r"eos_token: expected an id in \[0, d_vocab=50\), got 50"),
    ],
)
def test_bad_generate_arguments_are_rejected(
    pos: int, max_new_tokens: int, eos_token: int | None, match: str
) -> None:
    model = build()
    with pytest.raises(ValueError, match=match):
        model.generate(prompt_for(2, pos), max_new_tokens, eos_token=eos_token)
    assert model.training  # restored even after a failure inside the loop
