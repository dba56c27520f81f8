"""Training and evaluation batches cut from one long stream of token ids.

The text is tokenised once into a 1-D id tensor; :func:`split_ids` keeps its end for validation.
Each training example is a window of ``n_ctx + 1`` consecutive ids: ``x`` is its first ``n_ctx``
ids and ``y`` its last ``n_ctx`` (``y[:, p] = x[:, p + 1]`` inside the window), the next-token
targets.

:class:`WindowSampler` makes batch ``step`` a pure function of ``(seed, step, rank, world_size)``,
so resuming a run at step ``s`` needs no sampler state and data-parallel ranks agree on who
reads what without talking to each other.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from jaxtyping import Int
from torch import Tensor

from tfs_core.validation import require_positive_ints
from tfs_decoder.training.errors import DataError

__all__ = ["WindowSampler", "eval_windows", "split_ids"]


def _validate_stream(name: str, ids: Tensor) -> None:
    if ids.ndim != 1:
        shape = tuple(ids.shape)
        raise ValueError(f"{name}: expected a 1-D tensor of token ids, got shape {shape}")


def split_ids(
    ids: Int[Tensor, " n_tokens"], val_fraction: float, n_ctx: int
) -> tuple[Int[Tensor, " n_train"], Int[Tensor, " n_val"]]:
    """Split the id stream into ``(train, val)``: contiguous, validation at the end.

    ``val`` holds the last ``max(round(n_tokens * val_fraction), n_ctx + 1)`` ids (at least one
    full window, so there is something to evaluate), ``train`` the ids before it. Both are views
    of ``ids``.

    Raises:
        ValueError: ``ids`` is not 1-D, ``val_fraction`` is not in (0, 1), or ``n_ctx`` < 1.
        DataError: either part would be shorter than ``n_ctx + 1`` ids (one window): the text
            is too short for this context length; the message says how long it is and must be.
    """
    _validate_stream("ids", ids)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
    require_positive_ints(n_ctx=n_ctx)
    n = ids.shape[0]
    window = n_ctx + 1
    n_val = max(round(n * val_fraction), window)
    n_train = n - n_val
    if n_train < window:
        needed = max(2 * window, _smallest_total(window, val_fraction))
        raise DataError(
            f"text too short: it has {n} tokens, but n_ctx={n_ctx} with val_fraction="
            f"{val_fraction} needs at least {needed} (one window of n_ctx + 1 = {window} tokens "
            "for training and one for validation); use more text or a smaller --n-ctx"
        )
    return ids[:n_train], ids[n_train:]


def _smallest_total(window: int, val_fraction: float) -> int:
    """The fewest ids for which ``n - max(round(n * f), window) >= window``."""
    n = 2 * window
    while n - max(round(n * val_fraction), window) < window:
        n += 1
    return n


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit generator seed from ``(seed, epoch)``, distinct pairs giving unrelated seeds."""
    digest = hashlib.blake2b(f"tfs-windows:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class WindowSampler:
    """Random non-overlapping training windows, a pure function of ``(seed, step, rank)``.

    Epoch ``e`` cuts ``data`` into ``n_windows = len(data) // (n_ctx + 1)`` non-overlapping
    windows of ``n_ctx + 1`` ids starting at a random offset in ``[0, len(data) % (n_ctx + 1)]``,
    and shuffles them; offset and order come from a generator seeded by ``(seed, e)`` alone, so
    every rank computes the same permutation. Rank ``r`` takes windows ``r, r + world_size, ...``
    of it, ``windows_per_epoch = n_windows // world_size`` each (the remainder is skipped that
    epoch), so within an epoch no two windows of any ranks overlap.

    Rank ``r`` reads its windows as one endless stream: ``batch(step)`` is items
    ``step * batch_size ... step * batch_size + batch_size - 1`` of it, where item ``k`` is the
    ``k % windows_per_epoch``-th window of epoch ``k // windows_per_epoch``. A batch larger than an
    epoch simply spans several epochs.

    Shapes:
        ``data`` ``[n_tokens]`` ids -> ``batch(step)``: ``x``, ``y`` ``[batch_size, n_ctx]``
        int64 on ``data``'s device, with ``y[i] = data[s_i + 1 : s_i + n_ctx + 1]`` where
        ``x[i] = data[s_i : s_i + n_ctx]``.
    """

    # Epochs whose window starts are kept; a batch rarely spans more than two epochs.
    _CACHE_EPOCHS = 4

    def __init__(
        self,
        data: Int[Tensor, " n_tokens"],
        n_ctx: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _validate_stream("data", data)
        require_positive_ints(n_ctx=n_ctx, batch_size=batch_size, world_size=world_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, world_size={world_size}), got {rank}")
        window = n_ctx + 1
        n_tokens = data.shape[0]
        n_windows = n_tokens // window
        if n_windows < world_size:
            raise DataError(
                f"data: {n_tokens} tokens hold {n_windows} windows of n_ctx + 1 = {window} "
                f"tokens, expected at least one per rank (world_size={world_size}), so at "
                f"least {world_size * window} tokens"
            )
        self.data = data.long()
        self.n_ctx = n_ctx
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.n_windows = n_windows
        self.windows_per_epoch = n_windows // world_size
        # [n_tokens - n_ctx, n_ctx + 1] view (no copy): row s is the window starting at s.
        self._rows = self.data.unfold(0, window, 1)
        self._starts: OrderedDict[int, Tensor] = OrderedDict()

    def epoch_starts(self, epoch: int) -> Int[Tensor, " windows_per_epoch"]:
        """Start offsets in ``data`` of this rank's windows in ``epoch``, in reading order."""
        starts = self._starts.get(epoch)
        if starts is not None:
            self._starts.move_to_end(epoch)
            return starts
        window = self.n_ctx + 1
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        n_tokens = self.data.shape[0]
        max_offset = n_tokens - self.n_windows * window
        offset = int(torch.randint(0, max_offset + 1, (1,), generator=g))
        order = torch.randperm(self.n_windows, generator=g)
        mine = order[self.rank :: self.world_size][: self.windows_per_epoch]
        starts = (offset + mine * window).to(self.data.device)
        self._starts[epoch] = starts
        if len(self._starts) > self._CACHE_EPOCHS:
            self._starts.popitem(last=False)
        return starts

    def batch_starts(self, step: int) -> Int[Tensor, " batch"]:
        """Start offsets in ``data`` of the windows of batch ``step``."""
        if step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step}")
        m = self.windows_per_epoch
        first = step * self.batch_size
        last = first + self.batch_size - 1
        parts = []
        for epoch in range(first // m, last // m + 1):
            lo = max(first, epoch * m) - epoch * m
            hi = min(last, epoch * m + m - 1) - epoch * m
            parts.append(self.epoch_starts(epoch)[lo : hi + 1])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def batch(self, step: int) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """``(x, y)`` of training batch ``step``: ``[batch_size, n_ctx]`` int64 each, ``y`` is
        ``x`` shifted by one position in ``data``."""
        # index_select, not rows[starts]: advanced indexing of this strided view runs a slow
        # parallel kernel (measured 5 ms vs 8 us per 32 x 257 batch on 2 threads).
        rows = self._rows.index_select(0, self.batch_starts(step))  # [batch_size, n_ctx + 1]
        return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def eval_windows(
    data: Int[Tensor, " n_tokens"], n_ctx: int, batch_size: int, n_batches: int
) -> list[tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]]:
    """``n_batches`` fixed ``(x, y)`` batches of evenly spaced windows over all of ``data``.

    The ``batch_size * n_batches`` windows start at ``round(linspace(0, n_tokens - n_ctx - 1))``,
    the same on every call, so successive evaluations compare like with like. Windows overlap
    when ``data`` is short; that only repeats tokens.

    Raises:
        ValueError: a size argument is not positive or ``data`` is not 1-D.
        DataError: ``data`` is shorter than ``n_ctx + 1`` ids.
    """
    _validate_stream("data", data)
    require_positive_ints(n_ctx=n_ctx, batch_size=batch_size, n_batches=n_batches)
    window = n_ctx + 1
    n_tokens = data.shape[0]
    if n_tokens < window:
        raise DataError(
            f"data: expected at least n_ctx + 1 = {window} tokens for one evaluation window, "
            f"got {n_tokens}"
        )
    total = batch_size * n_batches
    starts = torch.linspace(0, n_tokens - window, total, dtype=torch.float64).round().long()
    rows = data.long().unfold(0, window, 1).index_select(0, starts.to(data.device))
    batches = rows.view(n_batches, batch_size, window).unbind(0)
    return [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]
