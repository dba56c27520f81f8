"""Sampling from a decoder: temperature, top-k and nucleus (top-p) filtering, and the
autoregressive loop behind :meth:`tfs_decoder.Decoder.generate`.

Given the logits ``z`` a model gives for the next token, the next-token distribution is::

    q = softmax(z / T)                                   # temperature T > 0
    q = renormalise(q restricted to the top-k tokens)    # Fan et al. 2018, top-k sampling
    q = renormalise(q restricted to the nucleus N_p)     # Holtzman et al. 2020, section 3.1

where the nucleus ``N_p`` is the smallest set of most likely tokens whose probability
reaches ``p``: ``sum_{i in N_p} q_i >= p``. The token whose probability carries the sum
across ``p`` is inside the set (so ``p = 0.5`` keeps one token when ``q_max = 0.5``),
and the set always holds at least one token. ``T = 0`` is greedy decoding: the arg max.

Ties are treated symmetrically: a token whose logit (top-k) or probability (top-p) equals
the one at the cut-off is kept, so the kept set can exceed ``k`` (or the smallest set)
only when tokens tie at the boundary, and never depends on token order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from tfs_attention import KVCache
from tfs_core.validation import require_positive_ints


def validate_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ``TypeError``/``ValueError`` naming the argument if a sampling option is invalid."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(
            f"temperature: expected a float >= 0, got {type(temperature).__name__} {temperature!r}"
        )
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature: expected a finite float >= 0, got {temperature!r}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise TypeError(
                f"top_k: expected an int >= 1 or None, got {type(top_k).__name__} {top_k!r}"
            )
        if top_k < 1:
            raise ValueError(f"top_k: expected an int >= 1 or None, got {top_k!r}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, int | float):
            raise TypeError(
                f"top_p: expected a float in (0, 1] or None, got {type(top_p).__name__} {top_p!r}"
            )
        if not 0 < top_p <= 1:  # also rejects nan
            raise ValueError(f"top_p: expected a float in (0, 1] or None, got {top_p!r}")


def _validate_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got dtype {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"logits: expected shape [batch, d_vocab >= 1], got {tuple(logits.shape)}")


def top_k_mask(logits: Float[Tensor, "batch d_vocab"], top_k: int) -> Bool[Tensor, "batch d_vocab"]:
    """``True`` where a logit is among the ``top_k`` largest of its row.

    A logit equal to the ``top_k``-th largest is kept too (ties are not broken by index);
    ``top_k >= d_vocab`` keeps every token.
    """
    k = min(top_k, logits.shape[-1])
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits >= kth_largest


def top_p_mask(
    probs: Float[Tensor, "batch d_vocab"], top_p: float
) -> Bool[Tensor, "batch d_vocab"]:
    """``True`` on the nucleus: the smallest set of most likely tokens whose probability
    sums to at least ``top_p`` (Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration", section 3.1).

    Sorted by probability, token ``i`` is in the set when the mass strictly before it is
    below ``top_p``; so the token that reaches ``top_p`` is included, the most likely token
    always is, and a token tied with the last one kept is kept as well.
    ``top_p = 1`` keeps every token (without it, rounding could make the sorted mass
    reach 1 before the least likely tokens).
    """
    if top_p >= 1:
        return torch.ones_like(probs, dtype=torch.bool)
    sorted_probs = torch.sort(probs, dim=-1, descending=True, stable=True).values
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    mass_before = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=-1)
    n_kept = (mass_before < top_p).sum(dim=-1, keepdim=True)  # >= 1: mass_before[:, 0] = 0
    smallest_kept = sorted_probs.gather(-1, n_kept - 1)
    return probs >= smallest_kept


def filtered_probs(
    logits: Float[Tensor, "batch d_vocab"],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """The distribution :func:`sample_next_token` draws from (see the module docstring).

    ``softmax(logits / temperature)``, restricted to the ``top_k`` largest logits, then to
    the ``top_p`` nucleus of what remains, renormalised after each step. ``temperature = 0``
    gives the one-hot distribution on the arg max (the first index among equal maxima).
    Half-precision logits are promoted to float32. Rows are filtered independently.
    """
    validate_sampling_args(temperature, top_k, top_p)
    _validate_logits(logits)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if temperature == 0:
        greedy = logits.argmax(dim=-1, keepdim=True)
        return torch.zeros_like(logits).scatter_(-1, greedy, 1.0)
    scaled = logits / temperature
    if top_k is not None:
        scaled = scaled.masked_fill(~top_k_mask(scaled, top_k), -math.inf)
    probs = torch.softmax(scaled, dim=-1)
    if top_p is not None:
        probs = torch.where(top_p_mask(probs, top_p), probs, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample_next_token(
    logits: Float[Tensor, "batch d_vocab"],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " batch"]:
    """Draw one token id per row from :func:`filtered_probs` of ``logits``.

    ``temperature = 0`` returns the arg max (greedy; ``top_k``, ``top_p`` and ``generator``
    are then irrelevant). Otherwise one draw of ``torch.multinomial`` per row, from
    ``generator`` (on the logits' device) or torch's global generator when ``None``.

    Shapes:
        logits ``[batch, d_vocab]`` (float) -> token ids ``[batch]`` (int64).
    """
    validate_sampling_args(temperature, top_k, top_p)
    _validate_logits(logits)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filtered_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _validate_generate_args(
    tokens: Tensor, max_new_tokens: int, n_ctx: int, eos_token: int | None
) -> None:
    if not isinstance(tokens, Tensor):
        raise TypeError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens: expected an integer tensor, got dtype {tokens.dtype}")
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"tokens: expected shape [batch, pos >= 1], got {tuple(tokens.shape)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
        raise TypeError(
            f"max_new_tokens: expected an int >= 0, got {type(max_new_tokens).__name__}"
        )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected an int >= 0, got {max_new_tokens}")
    require_positive_ints(n_ctx=n_ctx)
    if eos_token is not None:
        if isinstance(eos_token, bool) or not isinstance(eos_token, int):
            raise TypeError(f"eos_token: expected an int or None, got {type(eos_token).__name__}")
        if eos_token < 0:
            raise ValueError(f"eos_token: expected an id >= 0, got {eos_token}")


def _next_token_logits(
    model: nn.Module,
    sequence: Int[Tensor, "batch pos"],
    n_ctx: int,
    kv_cache: Sequence[KVCache] | None,
) -> Float[Tensor, "batch d_vocab"]:
    """The logits for the token after ``sequence``, from its last ``n_ctx`` tokens.

    With a cache that holds a prefix of ``sequence``, only the positions after that prefix
    are fed. Past ``n_ctx`` the cache cannot help (its keys carry absolute positions that
    would all have to shift), so each step is one full forward, as without a cache.
    """
    if kv_cache is None or sequence.shape[1] > n_ctx:
        logits: Tensor = model(sequence[:, -n_ctx:])
    else:
        logits = model(sequence[:, kv_cache[0].length :], kv_cache=kv_cache)
    return logits[:, -1, :]


def generate_tokens(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    max_new_tokens: int,
    *,
    n_ctx: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    eos_token: int | None = None,
    kv_cache: Sequence[KVCache] | None = None,
) -> Int[Tensor, "batch total"]:
    """Extend ``tokens`` autoregressively by up to ``max_new_tokens`` tokens.

    ``model`` maps ``[batch, pos <= n_ctx]`` token ids to ``[batch, pos, d_vocab]`` logits.
    Each step feeds the last ``n_ctx`` tokens (so generation continues past ``n_ctx``,
    forgetting the oldest tokens), and draws the next token with :func:`sample_next_token`.
    With ``kv_cache`` (empty; ``model`` must accept ``model(tokens, kv_cache=kv_cache)``
    as :meth:`tfs_decoder.Decoder.forward` does) the prompt is fed once and then one new
    token per step, until the sequence outgrows ``n_ctx``; from then on each step is a full
    forward of the last ``n_ctx`` tokens, exactly as without a cache.
    Once a row has generated ``eos_token`` it is padded with ``eos_token``; the loop stops
    early when every row has (an ``eos_token`` inside the prompt does not count).

    Runs under ``torch.inference_mode()`` (no gradients, and none of the view and version
    tracking that autograd would need: a step is a few hundred small ops, and that
    tracking was a fifth of its time) with every submodule in eval mode (no dropout), and
    puts each submodule's training flag back afterwards, also when an error is raised. The
    tokens returned are an ordinary tensor, not an inference tensor, so they can go
    anywhere, autograd included.

    Shapes:
        tokens ``[batch, pos]`` (integer) -> ``[batch, pos + new]`` with the prompt as its
        prefix, ``new <= max_new_tokens``, in the prompt's dtype.
    """
    validate_sampling_args(temperature, top_k, top_p)
    _validate_generate_args(tokens, max_new_tokens, n_ctx, eos_token)
    if kv_cache is not None and any(cache.length for cache in kv_cache):
        raise ValueError("kv_cache: expected an empty cache (length 0), got one already in use")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            sequence = tokens
            finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
            for _ in range(max_new_tokens):
                logits = _next_token_logits(model, sequence, n_ctx, kv_cache)
                if eos_token is not None and eos_token >= logits.shape[-1]:
                    raise ValueError(
                        f"eos_token: expected an id in [0, d_vocab={logits.shape[-1]}), "
                        f"got {eos_token}"
                    )
                next_token = sample_next_token(
                    logits,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    generator=generator,
                )
                if eos_token is not None:
                    next_token = next_token.masked_fill(finished, eos_token)
                    finished = finished | (next_token == eos_token)
                sequence = torch.cat([sequence, next_token[:, None].to(sequence.dtype)], dim=1)
                if eos_token is not None and bool(finished.all()):
                    break
        return sequence.clone()  # made outside inference mode: an ordinary tensor
    finally:
        for module, training in modes:
            module.training = training
