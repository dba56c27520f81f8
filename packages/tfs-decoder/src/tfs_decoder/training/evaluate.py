"""Measuring a model during and after training: validation loss and the closing sample."""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder.decoder import Decoder
from tfs_decoder.generate import generate_tokens
from tfs_decoder.loss import cross_entropy
from tfs_decoder.training.device import autocast
from tfs_decoder.training.distributed import DistInfo, all_reduce_sum
from tfs_decoder.training.errors import TfsError
from tfs_decoder.training.tokenizer import Tokenizer

# Sampling settings of the end-of-training sample.
SAMPLE_TEMPERATURE = 0.8
SAMPLE_TOP_K = 40


@torch.no_grad()
def evaluate(
    model: nn.Module,
    windows: list[tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    info: DistInfo | None = None,
) -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` over ``windows``.

    Under DDP each rank evaluates every ``world_size``-th batch and the sums are added up,
    so every rank returns the mean over all of ``windows``. The model is in eval mode (no
    dropout) for the duration and is put back in the mode it was in.
    """
    info = info if info is not None else DistInfo()
    was_training = model.training
    model.eval()
    try:
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        for x, y in windows[info.rank :: info.world_size]:
            with autocast(device, dtype):
                logits = model(x.to(device))
            losses = cross_entropy(logits, y.to(device))
            totals[0] += losses.sum(dtype=torch.float64)
            totals[1] += losses.numel()
        all_reduce_sum(totals, info)
        return float(totals[0] / totals[1])
    finally:
        model.train(was_training)


def generate(
    model: nn.Module,
    tokens: Int[Tensor, "batch pos"],
    max_new_tokens: int,
    *,
    n_ctx: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch total"]:
    """``tokens`` continued by ``model`` (:func:`~tfs_decoder.generate.generate_tokens`):
    through a key/value cache in tfs's :class:`~tfs_decoder.Decoder` with tfs's attention,
    in full every step in a learner's decoder or attention, which keep no cache."""
    if isinstance(model, Decoder):
        cached = all(isinstance(block.attn, MultiHeadAttention) for block in model.blocks)
        return model.generate(
            tokens, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            use_cache=cached, generator=generator,
        )  # fmt: skip
    return generate_tokens(
        model, tokens, max_new_tokens, n_ctx=n_ctx, temperature=temperature, top_k=top_k,
        top_p=top_p, generator=generator,
    )  # fmt: skip


def sample_text(
    model: nn.Module,
    tokenizer: Tokenizer,
    *,
    prompt: str,
    n_tokens: int,
    seed: int,
    n_ctx: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> str:
    """``n_tokens`` tokens after ``prompt``, drawn with a generator seeded by ``seed``
    (temperature 0.8, top-k 40): the same text for the same weights and seed. A prompt the
    tokenizer cannot encode is replaced by token 0."""
    prompt_ids, prompt = _prompt_ids(tokenizer, prompt)
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    with autocast(device, dtype):
        out = generate(
            model,
            tokens,
            n_tokens,
            n_ctx=n_ctx,
            temperature=SAMPLE_TEMPERATURE,
            top_k=min(SAMPLE_TOP_K, tokenizer.vocab_size),
            generator=generator,
        )
    return prompt + tokenizer.decode(out[0, len(prompt_ids) :].tolist())


def _prompt_ids(tokenizer: Tokenizer, prompt: str) -> tuple[list[int], str]:
    """The ids of ``prompt``, or of a stand-in when the tokenizer cannot encode it."""
    if prompt:
        try:
            ids = tokenizer.encode(prompt)
        except TfsError:
            ids = []
        if ids:
            return ids, prompt
    return [0], tokenizer.decode([0])
