"""Cross-entropy over the vocabulary, written from log-softmax."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def cross_entropy(
    logits: Float[Tensor, "batch pos d_vocab"], targets: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    """Per-position loss ``-log softmax(logits)[target]`` in nats, over the vocabulary axis.

    Shapes:
        logits ``[batch, pos, d_vocab]``, targets ``[batch, pos]`` -> ``[batch, pos]``.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets: expected shape {tuple(logits.shape[:-1])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    # log_softmax in float32 even under bf16 autocast: the loss needs the precision.
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """Mean loss of predicting ``tokens[:, p + 1]`` from ``logits[:, p]`` (the shifted loss).

    The last position has no next token and is left out, so ``pos - 1`` predictions per
    sequence are averaged.

    Shapes:
        logits ``[batch, pos, d_vocab]``, tokens ``[batch, pos]`` -> scalar.
    """
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"tokens: expected shape {tuple(logits.shape[:-1])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(tokens.shape)}"
        )
    if tokens.shape[1] < 2:
        raise ValueError(f"tokens: expected at least 2 positions, got {tokens.shape[1]}")
    return cross_entropy(logits[:, :-1], tokens[:, 1:]).mean()
