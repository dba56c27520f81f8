"""An encoder-only classifier: non-causal attention with sinusoidal positions.

Shows that the tfs components are not tied to the decoder: ``MultiHeadAttention`` with
``causal=False`` lets every position read every other one (the encoder self-attention of
Vaswani et al. 2017, "Attention Is All You Need", section 3.2.3, as used by BERT), and
``SinusoidalPositionalEncoding`` (section 3.5) tells the model where each token sits.
``tfs_decoder.ResidualBlock`` takes that non-causal attention as it would any other module.

Task: each sequence holds one token ``A`` and one token ``B`` among random filler tokens;
the label says whether ``A`` comes before ``B``. Order is all that decides it, so the task
needs positions. The control is the same model without positional encoding: attention
without positions is permutation-equivariant and the mean-pooled read-out is
permutation-invariant, so that model cannot tell "A ... B" from "B ... A" and stays at
chance (50%) however long it trains.

Run it: ``python examples/encoder_classifier.py [--seed 0] [--steps 250]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import LayerNorm, ResidualBlock, cross_entropy
from tfs_embeddings import Embed, SinusoidalPositionalEncoding, Unembed
from tfs_mlp import MLP

N_FILLER = 8  # filler token ids 0..7
A, B = N_FILLER, N_FILLER + 1
D_VOCAB = N_FILLER + 2
POS = 12  # sequence length
D_MODEL, N_HEADS, D_MLP, N_LAYERS = 32, 4, 64, 1
BATCH, LR = 64, 3e-3
EVAL_BATCH = 1000


class EncoderClassifier(nn.Module):
    """Embed + sinusoidal positions, ``n_layers`` pre-LN blocks with non-causal attention,
    final LayerNorm, mean over positions, and ``Unembed(d_model, n_classes)`` as a linear
    read-out of the pooled vector.

    Shapes:
        tokens ``[batch, pos]`` -> class logits ``[batch, n_classes]``.
    """

    def __init__(self, *, use_positions: bool = True, n_classes: int = 2) -> None:
        super().__init__()
        self.embed = Embed(D_VOCAB, D_MODEL)
        self.pos_embed = SinusoidalPositionalEncoding(POS, D_MODEL) if use_positions else None
        self.blocks = nn.ModuleList(
            ResidualBlock(
                D_MODEL, MultiHeadAttention(D_MODEL, N_HEADS, causal=False), MLP(D_MODEL, D_MLP)
            )
            for _ in range(N_LAYERS)
        )
        self.ln_final = LayerNorm(D_MODEL)
        self.head = Unembed(D_MODEL, n_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x: Tensor = self.embed(tokens)
        if self.pos_embed is not None:
            x = x + self.pos_embed(tokens)
        for block in self.blocks:
            x = block(x)
        pooled = self.ln_final(x).mean(dim=1, keepdim=True)  # [batch, 1, d_model]
        logits: Tensor = self.head(pooled)[:, 0]
        return logits


def make_batch(g: torch.Generator, batch: int) -> tuple[Tensor, Tensor]:
    """Random filler tokens with ``A`` and ``B`` at two distinct random positions; the
    label is 1 where ``A`` comes first. Returns tokens ``[batch, pos]``, labels ``[batch]``."""
    tokens = torch.randint(0, N_FILLER, (batch, POS), generator=g)
    where = torch.rand(batch, POS, generator=g).argsort(dim=-1)[:, :2]  # two distinct positions
    rows = torch.arange(batch)
    tokens[rows, where[:, 0]] = A
    tokens[rows, where[:, 1]] = B
    return tokens, (where[:, 0] < where[:, 1]).long()


@dataclass
class Result:
    accuracy: float  # on fresh sequences, with positional encoding
    control_accuracy: float  # the same model and training without positional encoding
    final_loss: float  # training loss of the last step, with positions


def train(seed: int, steps: int, *, use_positions: bool) -> tuple[EncoderClassifier, float]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = EncoderClassifier(use_positions=use_positions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        tokens, labels = make_batch(g, BATCH)
        loss = cross_entropy(model(tokens)[:, None], labels[:, None]).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model, loss.item()


@torch.no_grad()
def accuracy(model: EncoderClassifier, seed: int) -> float:
    """Accuracy on fresh sequences, each paired with its copy where ``A`` and ``B`` swap
    places: the pairs hold the same tokens with opposite labels, so a model blind to order
    gets exactly one of each pair right."""
    tokens, labels = make_batch(torch.Generator().manual_seed(seed + 10_000), EVAL_BATCH // 2)
    swapped = torch.where(tokens == A, B, torch.where(tokens == B, A, tokens))
    tokens, labels = torch.cat([tokens, swapped]), torch.cat([labels, 1 - labels])
    right: float = (model(tokens).argmax(dim=-1) == labels).float().mean().item()
    return right


def main(seed: int = 0, steps: int = 250) -> Result:
    """Train the classifier and its no-positions control for ``steps`` steps each."""
    model, final_loss = train(seed, steps, use_positions=True)
    control, _ = train(seed, steps, use_positions=False)
    return Result(accuracy(model, seed), accuracy(control, seed), final_loss)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args()
    result = main(args.seed, args.steps)
    print(f"accuracy with positions:    {result.accuracy:.3f}")
    print(f"accuracy without positions: {result.control_accuracy:.3f} (chance: 0.5)")
    print(f"final training loss:        {result.final_loss:.3f}")
