"""The learning tasks of the checks, and the package's learning tests too: a bigram map
(:func:`train_deterministic_bigram`) and a label per position
(:func:`train_position_labels`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_core.checking import output
from tfs_embeddings.checks._common import Factory
from tfs_embeddings.embed import Embed
from tfs_embeddings.unembed import Unembed

__all__ = [
    "BigramModel",
    "token_cross_entropy",
    "train_deterministic_bigram",
    "train_position_labels",
]


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over the vocabulary (last axis), averaged over batch and positions."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class BigramModel(nn.Module):
    """``logits[b, p] = unembed(embed(tokens) [+ positional(tokens)])[b, p]``: one position
    at a time."""

    def __init__(
        self, embed: nn.Module, unembed: nn.Module, positional: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.embed = embed
        self.positional = positional
        self.unembed = unembed

    def forward(self, tokens: Tensor) -> Tensor:
        residual = output(self.embed(tokens), "embed")
        if self.positional is not None:
            residual = residual + output(self.positional(tokens), "positional embedding")
        return output(self.unembed(residual), "unembed")


def train_deterministic_bigram(
    seed: int,
    *,
    make_embed: Factory = Embed,
    make_unembed: Factory = Unembed,
    d_vocab: int = 32,
    steps: int = 60,
) -> tuple[float, float]:
    """Train ``make_unembed(make_embed(tokens))`` (``d_model = d_vocab``, Adam lr 0.05,
    ``steps`` batches of 16 x 16 random tokens) on ``next = f(current)`` for a random map f.

    Return the accuracy of ``argmax q(. | x)`` over every id x, and the smallest
    probability ``q(f(x) | x)`` the model gives to the right next token.
    """
    gen = torch.Generator().manual_seed(seed)
    f = torch.randint(0, d_vocab, (d_vocab,), generator=gen)
    torch.manual_seed(seed)
    model = BigramModel(
        make_embed(d_vocab=d_vocab, d_model=d_vocab), make_unembed(d_model=d_vocab, d_vocab=d_vocab)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        tokens = torch.randint(0, d_vocab, (16, 16), generator=gen)
        loss = token_cross_entropy(model(tokens), f[tokens])
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    with torch.no_grad():
        q = torch.softmax(model(torch.arange(d_vocab)[None])[0], -1)
    accuracy = (q.argmax(-1) == f).float().mean().item()
    return accuracy, q[torch.arange(d_vocab), f].min().item()


def train_position_labels(
    seed: int,
    make_positional: Factory | None,
    *,
    n_ctx: int = 16,
    d_model: int = 32,
    steps: int = 150,
) -> tuple[float, float]:
    """Label at position p is ``labels[p]``, a fixed random permutation of 0..n_ctx-1;
    tokens are uniform noise. Train tfs's Embed + ``make_positional(n_ctx, d_model)`` +
    tfs's Unembed (Adam lr 0.05, ``steps`` batches of 32 sequences) and return (accuracy,
    cross-entropy) on 1024 fresh sequences. ``None`` is the control: no positional part.

    Each label appears once per sequence, so without positions the best possible is chance
    (1/n_ctx) and the cross-entropy can be no lower than log(n_ctx).
    """
    d_vocab = n_ctx
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n_ctx, generator=gen)
    torch.manual_seed(seed)
    positional = None if make_positional is None else make_positional(n_ctx=n_ctx, d_model=d_model)
    model = BigramModel(
        Embed(d_vocab=d_vocab, d_model=d_model),
        Unembed(d_model=d_model, d_vocab=d_vocab),
        positional,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        tokens = torch.randint(0, d_vocab, (32, n_ctx), generator=gen)
        loss = token_cross_entropy(model(tokens), labels.expand(32, n_ctx))
        optimizer.zero_grad()
        torch.autograd.backward(loss)
        optimizer.step()
    with torch.no_grad():
        tokens = torch.randint(0, d_vocab, (1024, n_ctx), generator=gen)
        logits = model(tokens)
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        cross_entropy = token_cross_entropy(logits, labels.expand(1024, n_ctx)).item()
    return accuracy, cross_entropy
