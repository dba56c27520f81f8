"""The key/value cache: keys and values of source positions an attention layer has already seen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor

from tfs_core.validation import require_positive_ints

T = TypeVar("T")


class KVCache:
    """Keys and values of earlier positions, kept so that each new position costs one step.

    In autoregressive generation the keys ``k = x W_K + b_K`` and values ``v = x W_V + b_V``
    of a position never change once computed (causal attention: later tokens do not affect
    earlier positions). So a layer can compute them for the new positions only, append them
    here, and attend from the new destinations to every source position cached so far.

    One cache belongs to one :class:`~tfs_attention.MultiHeadAttention` layer and one batch;
    pass it as ``attn(x, kv_cache=cache)``. It is an inference tool: the buffers are written
    in place, so do not backpropagate through a forward that used it.

    Args:
        max_pos: the most positions the cache holds (for a model, its ``n_ctx``). The
            buffers ``[batch, head, max_pos, d_head]`` (head before position, the layout
            the attention products use) are allocated on the first :meth:`append`, with
            the dtype and device of the keys given there.

    Example::

        cache = KVCache(max_pos=64)
        out_prompt = attn(x[:, :10], kv_cache=cache)    # positions 0..9
        out_next = attn(x[:, 10:11], kv_cache=cache)    # position 10 attends to 0..10
    """

    def __init__(self, max_pos: int) -> None:
        require_positive_ints(max_pos=max_pos)
        self.max_pos = max_pos
        self.length = 0
        self._keys: Tensor | None = None
        self._values: Tensor | None = None
        self._kept: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def append(
        self,
        keys: Float[Tensor, "batch head pos d_head"],
        values: Float[Tensor, "batch head pos d_head"],
    ) -> tuple[Float[Tensor, "batch head src d_head"], Float[Tensor, "batch head src d_head"]]:
        """Store the keys and values of ``pos`` new positions; return those of all ``src``
        positions cached so far (views of the buffers, ``src = length`` after the append)."""
        if keys.shape != values.shape or keys.ndim != 4:
            raise ValueError(
                "keys, values: expected equal shapes [batch, head, pos, d_head], got "
                f"{tuple(keys.shape)} and {tuple(values.shape)}"
            )
        end = self.length + keys.shape[2]
        if end > self.max_pos:
            raise ValueError(
                f"kv_cache: holds at most max_pos={self.max_pos} positions, got "
                f"{self.length} cached + {keys.shape[2]} new"
            )
        if self._keys is None or self._values is None:
            batch, n_heads, _, d_head = keys.shape
            shape = (batch, n_heads, self.max_pos, d_head)
            self._keys = torch.empty(shape, dtype=keys.dtype, device=keys.device)
            self._values = torch.empty(shape, dtype=values.dtype, device=values.device)
        elif self._keys.is_inference() and not torch.is_inference_mode_enabled():
            # Filled under torch.inference_mode() (as Decoder.generate does) and written now
            # outside it, where an inference tensor cannot be written: write to copies.
            self._keys, self._values = self._keys.clone(), self._values.clone()
        if (*keys.shape[:2], keys.shape[3]) != (*self._keys.shape[:2], self._keys.shape[3]):
            raise ValueError(
                "keys: expected shape [batch, head, pos, d_head] with batch, head, d_head = "
                f"{self._keys.shape[0]}, {self._keys.shape[1]}, {self._keys.shape[3]} as "
                f"cached, got {tuple(keys.shape)}"
            )
        self._keys[:, :, self.length : end] = keys
        self._values[:, :, self.length : end] = values
        self.length = end
        return self._keys[:, :, :end], self._values[:, :, :end]

    def keep(self, name: str, sources: Sequence[Tensor], compute: Callable[[], T]) -> T:
        """``compute()``, computed once and kept with the cache under ``name`` until one of
        ``sources`` changes or :meth:`reset`: for what a layer derives from its weights
        once per sequence instead of once per step, such as its query, key and value
        weights laid side by side.

        A source has changed when it is another tensor (another storage, dtype or device)
        or was written in place since (its version counter moved: ``load_state_dict``,
        optimizer steps, in-place edits under ``torch.no_grad()``). Writes through
        ``.data``, which autograd does not track either, are not seen. An inference tensor
        (made under ``torch.inference_mode()``) has no version counter, so with one among
        ``sources`` nothing is kept: ``compute()`` runs at every call.
        """
        if any(t.is_inference() for t in sources):
            return compute()
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        kept = self._kept.get(name)
        if kept is not None and kept[0] == key:
            value: T = kept[1]
            return value
        value = compute()
        self._kept[name] = (key, value)
        return value

    def reset(self) -> None:
        """Forget every cached position and every value kept by :meth:`keep` (the buffers
        are kept for reuse)."""
        self.length = 0
        self._kept.clear()

    def __repr__(self) -> str:
        return f"KVCache(max_pos={self.max_pos}, length={self.length})"
