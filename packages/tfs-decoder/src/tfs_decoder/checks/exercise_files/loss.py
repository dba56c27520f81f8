"""Exercise: the next-token loss. Write the function, then check it with

tfs check loss {file}:next_token_loss
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor


def next_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, ""]:
    """The mean cross-entropy, in nats, of predicting ``tokens[:, p + 1]`` from
    ``logits[:, p]``: ``-log softmax(logits[:, p])[tokens[:, p + 1]]`` over the vocabulary,
    averaged over every batch row and every position that has a next token (``pos - 1``
    per sequence).

    Shapes: logits ``[batch, pos, d_vocab]``, tokens ``[batch, pos]`` -> a scalar.
    """
    raise NotImplementedError
