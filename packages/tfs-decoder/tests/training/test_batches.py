"""split_ids, WindowSampler and eval_windows: where every window comes from.

Most tests sample from ``data = arange(n_tokens)``, where a token's value is its position: then
``x[i, 0]`` is the window's start and "y is x shifted by one in the data" reads ``y == x + 1``.
A sampler's windows depend only on the data's length, so the same starts index any other data.
No floating point here: every comparison is exact.
"""

from __future__ import annotations

import itertools
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tfs_decoder.training.batches import WindowSampler, eval_windows, split_ids
from tfs_decoder.training.errors import DataError, TfsError


def _starts(x: Tensor, n_ctx: int, n_tokens: int) -> list[int]:
    """Window starts of a batch sampled from ``arange(n_tokens)``, checking each window is whole."""
    assert x.dtype == torch.int64
    starts = x[:, 0]
    assert torch.equal(x, starts[:, None] + torch.arange(n_ctx)), "window is not consecutive"
    assert int(starts.min()) >= 0
    assert int(starts.max()) + n_ctx + 1 <= n_tokens, "window (with its target) leaves the data"
    return [int(s) for s in starts]


def _disjoint(starts: list[int], window: int) -> bool:
    ordered = sorted(starts)
    return all(b - a >= window for a, b in itertools.pairwise(ordered))


# ----- split_ids -----


def test_split_ids_is_contiguous_with_val_at_the_end() -> None:
    ids = torch.arange(1000)
    train, val = split_ids(ids, 0.1, 16)
    assert train.shape == (900,)
    assert val.shape == (100,)
    assert torch.equal(torch.cat([train, val]), ids)
    assert int(val[0]) == 900


def test_split_ids_keeps_at_least_one_window_for_validation() -> None:
    ids = torch.arange(100)
    # round(100 * 0.05) = 5 ids would not hold one window of n_ctx + 1 = 21.
    train, val = split_ids(ids, 0.05, 20)
    assert val.shape == (21,)
    assert torch.equal(torch.cat([train, val]), ids)


def test_split_ids_does_not_copy_or_modify() -> None:
    ids = torch.arange(50)
    before = ids.clone()
    train, val = split_ids(ids, 0.2, 4)
    assert torch.equal(ids, before)
    assert train.data_ptr() == ids.data_ptr()  # views of the original
    assert val.untyped_storage().data_ptr() == ids.untyped_storage().data_ptr()


def test_split_ids_boundary_between_enough_and_too_short() -> None:
    # n_ctx=8: a window is 9 ids; 18 ids split 9 + 9; 17 ids cannot.
    train, val = split_ids(torch.arange(18), 0.1, 8)
    assert (train.shape[0], val.shape[0]) == (9, 9)
    with pytest.raises(
        DataError, match=r"text too short: it has 17 tokens.* needs at least 18"
    ) as e:
        split_ids(torch.arange(17), 0.1, 8)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, TfsError)


def test_split_ids_text_shorter_than_one_window() -> None:
    with pytest.raises(DataError, match=r"it has 100 tokens, but n_ctx=256 .*needs at least 514"):
        split_ids(torch.arange(100), 0.1, 256)


def test_split_ids_needed_count_accounts_for_a_large_val_fraction() -> None:
    # val_fraction=0.5, n_ctx=9 (window 10): n needs n - round(n / 2) >= 10, so n >= 20 (even n)
    # or 21; the smallest is 20.
    with pytest.raises(DataError, match=r"needs at least 20"):
        split_ids(torch.arange(19), 0.5, 9)
    train, val = split_ids(torch.arange(20), 0.5, 9)
    assert train.shape[0] == val.shape[0] == 10


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_ids_rejects_bad_val_fraction(val_fraction: float) -> None:
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\), got"):
        split_ids(torch.arange(1000), val_fraction, 8)


def test_split_ids_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"n_ctx: expected a positive int, got 0"):
        split_ids(torch.arange(1000), 0.1, 0)
    # 2-D ids: the runtime shape check (TypeError) catches it in tests, ValueError otherwise.
    with pytest.raises((TypeError, ValueError), match=r"ids|n_tokens"):
        split_ids(torch.arange(1000).view(10, 100), 0.1, 8)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), n_ctx=st.integers(1, 64), val_fraction=st.floats(0.01, 0.9))
def test_split_ids_property(n: int, n_ctx: int, val_fraction: float) -> None:
    ids = torch.arange(n)
    try:
        train, val = split_ids(ids, val_fraction, n_ctx)
    except DataError as e:
        needed = int(str(e).split("needs at least ")[1].split()[0])
        assert n < needed
        return
    assert torch.equal(torch.cat([train, val]), ids)
    assert train.shape[0] >= n_ctx + 1
    assert val.shape[0] == max(round(n * val_fraction), n_ctx + 1)


# ----- WindowSampler -----


def test_batch_shapes_dtype_and_shift() -> None:
    n_tokens, n_ctx, batch = 5000, 16, 8
    sampler = WindowSampler(torch.arange(n_tokens, dtype=torch.int32), n_ctx, batch, seed=0)
    for step in range(20):
        x, y = sampler.batch(step)
        assert x.shape == y.shape == (batch, n_ctx)
        assert x.dtype == y.dtype == torch.int64
        assert x.is_contiguous()
        assert y.is_contiguous()
        assert torch.equal(y, x + 1)  # y is x shifted by one position in the data
        _starts(x, n_ctx, n_tokens)


def test_batch_indexes_the_real_data() -> None:
    n_tokens, n_ctx = 3000, 12
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 50, (n_tokens,), generator=g)
    before = data.clone()
    on_data = WindowSampler(data, n_ctx, 4, seed=3)
    on_positions = WindowSampler(torch.arange(n_tokens), n_ctx, 4, seed=3)
    for step in (0, 1, 17):
        x, y = on_data.batch(step)
        for i, s in enumerate(_starts(on_positions.batch(step)[0], n_ctx, n_tokens)):
            assert torch.equal(x[i], data[s : s + n_ctx])
            assert torch.equal(y[i], data[s + 1 : s + n_ctx + 1])
    assert torch.equal(data, before)
    # The batch is a copy: writing to it leaves the data alone.
    x, _ = on_data.batch(0)
    x.fill_(-1)
    assert torch.equal(data, before)


def test_batch_is_a_pure_function_of_seed_step_rank() -> None:
    data = torch.arange(4000)
    a = WindowSampler(data, 10, 6, seed=11)
    b = WindowSampler(data, 10, 6, seed=11)
    # b is asked out of order and far ahead first (its epoch cache evicts and refills).
    later = [b.batch(s)[0] for s in (900, 3, 50, 400)]
    assert all(torch.equal(x, b.batch(s)[0]) for x, s in zip(later, (900, 3, 50, 400), strict=True))
    for step in (0, 3, 50, 400, 900, 3):
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
    other_seed = WindowSampler(data, 10, 6, seed=12)
    assert not torch.equal(a.batch(0)[0], other_seed.batch(0)[0])
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])


def test_ranks_in_one_step_get_disjoint_windows() -> None:
    n_tokens, n_ctx, batch, world = 10_000, 20, 8, 4
    samplers = [WindowSampler(torch.arange(n_tokens), n_ctx, batch, 5, r, world) for r in range(4)]
    for step in range(5):
        starts = [s for smp in samplers for s in _starts(smp.batch(step)[0], n_ctx, n_tokens)]
        assert len(starts) == batch * world
        assert _disjoint(starts, n_ctx + 1)


def test_one_epoch_of_every_rank_is_a_partition_of_non_overlapping_windows() -> None:
    n_tokens, n_ctx, batch, world = 2000, 15, 4, 3
    window = n_ctx + 1
    samplers = [WindowSampler(torch.arange(n_tokens), n_ctx, batch, 2, r, world) for r in range(3)]
    per_epoch = samplers[0].windows_per_epoch
    assert per_epoch == (n_tokens // window) // world  # 125 windows, 41 per rank
    assert per_epoch % batch != 0  # so batches straddle epochs
    for epoch in range(3):
        everyone: list[int] = []
        for smp in samplers:
            # Rank-local items epoch * per_epoch ... (epoch + 1) * per_epoch - 1.
            first, last = epoch * per_epoch, (epoch + 1) * per_epoch - 1
            items: list[int] = []
            for step in range(first // batch, last // batch + 1):
                items += _starts(smp.batch(step)[0], n_ctx, n_tokens)
            mine = items[first - (first // batch) * batch :][:per_epoch]
            assert len(mine) == per_epoch
            assert _disjoint(mine, window), f"rank {smp.rank} overlaps itself in epoch {epoch}"
            everyone += mine
        assert _disjoint(everyone, window), f"ranks overlap in epoch {epoch}"
        # One epoch's windows sit on one grid: the same offset modulo the window length.
        assert len({s % window for s in everyone}) == 1


def test_epochs_reshuffle() -> None:
    sampler = WindowSampler(torch.arange(10_000), 31, 4, seed=0)
    assert not torch.equal(sampler.epoch_starts(0), sampler.epoch_starts(1))
    # The same windows' positions come back each epoch only up to the offset: the sorted starts
    # of an epoch are an arithmetic progression with step n_ctx + 1.
    for epoch in range(3):
        ordered = sampler.epoch_starts(epoch).sort().values
        assert torch.equal(ordered.diff(), torch.full((ordered.shape[0] - 1,), 32))


def test_batch_larger_than_the_data_spans_several_epochs() -> None:
    n_tokens, n_ctx, batch = 35, 10, 8  # 3 windows of 11 tokens, 2 tokens spare
    sampler = WindowSampler(torch.arange(n_tokens), n_ctx, batch, seed=1)
    assert sampler.windows_per_epoch == 3
    items: list[int] = []
    for step in range(3):
        x, y = sampler.batch(step)
        assert x.shape == (batch, n_ctx)
        assert torch.equal(y, x + 1)
        items += _starts(x, n_ctx, n_tokens)
    # Items 3e, 3e + 1, 3e + 2 are epoch e: three non-overlapping windows on one grid.
    for epoch in range(len(items) // 3):
        group = items[3 * epoch : 3 * epoch + 3]
        assert _disjoint(group, n_ctx + 1)
        assert len({s % (n_ctx + 1) for s in group}) == 1


def test_data_of_exactly_one_window() -> None:
    sampler = WindowSampler(torch.arange(11), 10, 3, seed=0)
    x, y = sampler.batch(5)
    assert torch.equal(x, torch.arange(10).expand(3, 10))
    assert torch.equal(y, torch.arange(1, 11).expand(3, 10))


def test_sampler_errors() -> None:
    with pytest.raises(DataError, match=r"10 tokens hold 0 windows of n_ctx \+ 1 = 11 tokens") as e:
        WindowSampler(torch.arange(10), 10, 4, seed=0)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"world_size=4\), so at least 44 tokens"):
        WindowSampler(torch.arange(40), 10, 4, seed=0, rank=0, world_size=4)
    data = torch.arange(1000)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[0, world_size=2\), got 2"):
        WindowSampler(data, 10, 4, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"world_size: expected a positive int, got 0"):
        WindowSampler(data, 10, 4, seed=0, rank=0, world_size=0)
    with pytest.raises(ValueError, match=r"n_ctx: expected a positive int, got 0"):
        WindowSampler(data, 0, 4, seed=0)
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int, got 0"):
        WindowSampler(data, 10, 0, seed=0)
    with pytest.raises(ValueError, match=r"step: expected a non-negative int, got -1"):
        WindowSampler(data, 10, 4, seed=0).batch(-1)


@settings(max_examples=25, deadline=None)
@given(
    n_tokens=st.integers(2, 3000),
    n_ctx=st.integers(1, 40),
    batch=st.integers(1, 16),
    world=st.integers(1, 4),
    seed=st.integers(0, 2**40),
    step=st.integers(0, 10_000),
)
def test_sampler_property(
    n_tokens: int, n_ctx: int, batch: int, world: int, seed: int, step: int
) -> None:
    window = n_ctx + 1
    if n_tokens // window < world:
        with pytest.raises(DataError):
            WindowSampler(torch.arange(n_tokens), n_ctx, batch, seed, 0, world)
        return
    samplers = [
        WindowSampler(torch.arange(n_tokens), n_ctx, batch, seed, r, world) for r in range(world)
    ]
    per_epoch = samplers[0].windows_per_epoch
    by_epoch: dict[int, list[int]] = {}
    for smp in samplers:
        x, y = smp.batch(step)
        assert x.shape == y.shape == (batch, n_ctx)
        assert torch.equal(y, x + 1)
        for i, s in enumerate(_starts(x, n_ctx, n_tokens)):
            by_epoch.setdefault((step * batch + i) // per_epoch, []).append(s)
        assert torch.equal(x, smp.batch(step)[0])
    for starts in by_epoch.values():
        assert _disjoint(starts, window)


def test_batch_is_cheap() -> None:
    """32 x 256 windows from 1M tokens: measured ~0.02 ms per batch without runtime type
    checking and ~0.35 ms with it (as here), on 2 threads of the loaded 2-core machine; the
    threshold, 2 ms amortised over 300 batches (9 epochs' permutations included), catches a
    slow gather such as advanced indexing of the strided window view (~5-8 ms per batch)."""
    data = torch.randint(0, 100, (1_000_000,), generator=torch.Generator().manual_seed(0))
    sampler = WindowSampler(data, 256, 32, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the slow parallel gather only shows with several threads
    try:
        sampler.batch(0)
        start = time.perf_counter()
        for step in range(1, 301):
            sampler.batch(step)
        per_batch = (time.perf_counter() - start) / 300
    finally:
        torch.set_num_threads(threads)
    assert per_batch < 2e-3, f"{per_batch * 1e3:.2f} ms per batch"


# ----- eval_windows -----


def test_eval_windows_are_fixed_and_evenly_spaced() -> None:
    n_tokens, n_ctx, batch, n_batches = 1000, 9, 4, 3
    data = torch.arange(n_tokens)
    first = eval_windows(data, n_ctx, batch, n_batches)
    again = eval_windows(data, n_ctx, batch, n_batches)
    assert len(first) == n_batches
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert x.shape == y.shape == (batch, n_ctx)
        assert x.dtype == torch.int64
        assert torch.equal(y, x + 1)
        assert torch.equal(x, x2)
        assert torch.equal(y, y2)
    starts = [s for x, _ in first for s in _starts(x, n_ctx, n_tokens)]
    assert starts[0] == 0
    assert starts[-1] == n_tokens - n_ctx - 1  # reaches the end of the data
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced up to rounding
    assert _disjoint(starts, n_ctx + 1)  # enough data: no window repeats tokens


def test_eval_windows_on_short_data_overlap_but_stay_inside() -> None:
    n_tokens, n_ctx = 30, 10
    batches = eval_windows(torch.arange(n_tokens), n_ctx, 5, 2)
    starts = [s for x, _ in batches for s in _starts(x, n_ctx, n_tokens)]
    assert starts == sorted(starts)
    assert (starts[0], starts[-1]) == (0, n_tokens - n_ctx - 1)
    single = eval_windows(torch.arange(11), 10, 2, 1)
    assert torch.equal(single[0][0], torch.arange(10).expand(2, 10))


def test_eval_windows_errors() -> None:
    with pytest.raises(DataError, match=r"at least n_ctx \+ 1 = 11 tokens .*, got 10"):
        eval_windows(torch.arange(10), 10, 2, 2)
    with pytest.raises(ValueError, match=r"n_batches: expected a positive int, got 0"):
        eval_windows(torch.arange(100), 10, 2, 0)
    with pytest.raises(ValueError, match=r"batch_size: expected a positive int, got 0"):
        eval_windows(torch.arange(100), 10, 0, 2)
