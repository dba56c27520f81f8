"""Extension points: a decoder whose MLP is a user-defined gated MLP (SwiGLU).

``tfs_decoder.Decoder`` builds each block's sublayers with two factories, ``make_attn`` and
``make_mlp``; any module mapping ``[batch, pos, d_model]`` to the same shape fits. Here the
GPT-2 MLP is swapped for the SwiGLU of Shazeer (2020), "GLU Variants Improve Transformer",
equation 6 (the MLP of PaLM and LLaMA)::

    out = (swish(x W_gate) * (x W_in)) W_out,      swish(a) = a * sigmoid(a)

Conventions that make a custom module a first-class part of the model:

- name the weight that writes the residual stream ``W_out`` (or ``W_O`` in an attention
  module): ``Decoder`` scales it by ``1 / sqrt(2 n_layers)`` at initialisation, as GPT-2 does;
- give it ``reset_parameters()``, so ``Decoder.reset_parameters()`` re-draws it too;
- give it ``hook_*`` identity submodules, so ``run_with_cache`` and ``run_with_hooks`` see
  its activations (here ``blocks.{i}.mlp.hook_gate`` and ``blocks.{i}.mlp.hook_post``).

The same module also plugs into a single block by composition,
``ResidualBlock(d_model, MultiHeadAttention(...), GatedMLP(...))``, for a stack of your own.

Task: arithmetic progressions modulo ``D_VOCAB``, ``x_{t+1} = (x_t + k) mod D_VOCAB`` with a
random start and step ``k`` per sequence. Two tokens fix ``k``; from then on each token is
determined, and computing ``(x_t + k) mod D_VOCAB`` is a lookup the MLP does. After
training, ``Decoder.generate`` (greedy, with and without the key/value cache) continues
two-token prompts.

Run it: ``python examples/gated_mlp_decoder.py [--seed 0] [--steps 150]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import (
    Decoder,
    DecoderConfig,
    ResidualBlock,
    cross_entropy,
    run_with_cache,
    run_with_hooks,
)

D_VOCAB = 12
POS = 12
CONFIG = DecoderConfig(
    d_vocab=D_VOCAB, d_model=64, n_heads=4, d_head=16, d_mlp=128, n_layers=2, n_ctx=POS
)
BATCH, LR = 64, 3e-3
EVAL_BATCH = 500
PROMPT = 2  # tokens given to generate(); the rest of the sequence is generated


class GatedMLP(nn.Module):
    """SwiGLU: ``out = (swish(x W_gate) * (x W_in)) W_out`` (Shazeer 2020, equation 6).

    Args:
        d_model: width of the residual stream.
        d_mlp: hidden width.
        init_std: standard deviation of the normal initialisation of the weights.

    Hook points: ``hook_gate`` (``swish(x W_gate)``) and ``hook_post`` (the gated product),
    both ``[batch, pos, d_mlp]``.

    Shapes:
        x ``[batch, pos, d_model]`` -> ``[batch, pos, d_model]``.
    """

    def __init__(self, d_model: int, d_mlp: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        self.init_std = init_std
        self.W_gate = nn.Parameter(torch.empty(d_model, d_mlp))
        self.W_in = nn.Parameter(torch.empty(d_model, d_mlp))
        self.W_out = nn.Parameter(torch.empty(d_mlp, d_model))  # the residual write
        self.hook_gate = nn.Identity()
        self.hook_post = nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight in (self.W_gate, self.W_in, self.W_out):
            nn.init.normal_(weight, mean=0.0, std=self.init_std)

    def forward(self, x: Tensor) -> Tensor:
        pre_gate = x @ self.W_gate
        gate = self.hook_gate(pre_gate * torch.sigmoid(pre_gate))
        post = self.hook_post(gate * (x @ self.W_in))
        out: Tensor = post @ self.W_out
        return out


def make_model(config: DecoderConfig = CONFIG) -> Decoder:
    """The extension point: a ``Decoder`` whose every block's MLP is a ``GatedMLP``."""
    return Decoder(config, make_mlp=lambda c: GatedMLP(c.d_model, c.d_mlp, init_std=c.init_std))


def make_block(config: DecoderConfig = CONFIG) -> ResidualBlock:
    """The same block built by composition, for a model of your own."""
    attn = MultiHeadAttention(config.d_model, config.n_heads, config.d_head)
    return ResidualBlock(config.d_model, attn, GatedMLP(config.d_model, config.d_mlp))


def progressions(g: torch.Generator, batch: int) -> Tensor:
    """``[batch, pos]``: ``(start + k * p) mod D_VOCAB`` with random ``start`` and ``k``."""
    start = torch.randint(0, D_VOCAB, (batch, 1), generator=g)
    step = torch.randint(1, D_VOCAB, (batch, 1), generator=g)
    return (start + step * torch.arange(POS)) % D_VOCAB


def ablate(activation: Tensor, name: str) -> Tensor:
    """A ``run_with_hooks`` hook that replaces an activation by zeros."""
    return torch.zeros_like(activation)


@dataclass
class Result:
    first_loss: float  # on the determined tokens (after the first two), about ln(D_VOCAB)
    final_loss: float
    ablated_loss: float  # final model with every gated MLP's output zeroed, fresh sequences
    generated_exact: float  # share of prompts continued exactly right, greedy with the cache
    cache_matches: bool  # generation with and without the KV cache gave the same tokens
    w_out_init_ratio: float  # std(W_out) / std(W_in) at initialisation: 1 / sqrt(2 n_layers)
    block_matches: bool  # make_block() with block 0's weights computes what block 0 does
    gate_shape: tuple[int, ...]  # blocks.0.mlp.hook_gate as recorded by run_with_cache


def main(seed: int = 0, steps: int = 150) -> Result:
    """Train the gated-MLP decoder on progressions, then generate with it."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = make_model()
    mlp = model.blocks[0].mlp
    assert isinstance(mlp, GatedMLP)
    w_out_init_ratio = (mlp.W_out.std() / mlp.W_in.std()).item()

    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        tokens = progressions(g, BATCH)
        # Predictions from position 1 on: the first token gives no clue to k.
        loss = cross_entropy(model(tokens)[:, 1:-1], tokens[:, 2:]).mean()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())

    tokens = progressions(g, EVAL_BATCH)
    prompt = tokens[:, :PROMPT]
    cached = model.generate(prompt, POS - PROMPT, temperature=0.0)
    uncached = model.generate(prompt, POS - PROMPT, temperature=0.0, use_cache=False)

    block = make_block()
    block.load_state_dict(model.blocks[0].state_dict())
    x = torch.randn(4, POS, CONFIG.d_model, generator=g)
    with torch.no_grad():
        _, cache = run_with_cache(model, tokens, names=["blocks.0.mlp.hook_gate"])
        # Zero-ablate the gated MLPs through their hook points: the loss shows they do the work.
        zero = [(f"blocks.{i}.mlp.hook_post", ablate) for i in range(CONFIG.n_layers)]
        ablated = run_with_hooks(model, tokens, fwd_hooks=zero)
        ablated_loss = cross_entropy(ablated[:, 1:-1], tokens[:, 2:]).mean().item()
        block_matches = torch.equal(block(x), model.blocks[0](x))
    return Result(
        first_loss=losses[0] if losses else float("nan"),
        final_loss=losses[-1] if losses else float("nan"),
        ablated_loss=ablated_loss,
        generated_exact=(cached == tokens).all(dim=1).float().mean().item(),
        cache_matches=torch.equal(cached, uncached),
        w_out_init_ratio=w_out_init_ratio,
        block_matches=block_matches,
        gate_shape=tuple(cache["blocks.0.mlp.hook_gate"].shape),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    result = main(args.seed, args.steps)
    print(f"loss on the determined tokens: {result.first_loss:.3f} -> {result.final_loss:.3f}")
    print(f"the same with the gated MLPs zero-ablated: {result.ablated_loss:.3f}")
    print(f"greedy continuations exactly right: {result.generated_exact:.3f}")
    print(f"same tokens with and without the KV cache: {result.cache_matches}")
    print(f"std(W_out) / std(W_in) at init: {result.w_out_init_ratio:.3f}")
    print(f"ResidualBlock(attn, GatedMLP) computes what block 0 does: {result.block_matches}")
    print(f"blocks.0.mlp.hook_gate: {list(result.gate_shape)}")
