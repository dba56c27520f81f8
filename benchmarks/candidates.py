"""What bench.py compares: the model shapes, and each candidate model built for a shape.

* :class:`Shape` and :data:`SHAPES`, the widths and batch every candidate gets alike;
* :class:`RefDecoder`, the reference GPT-2 decoder written the usual fast way with torch's
  high-level layers (``ref``; ``ref-manual`` with the masked softmax written out);
* :data:`CANDIDATES`: how to build ``tfs``, ``tfs-sdpa``, ``tfs-fused``, ``ref``,
  ``ref-manual``, ``hf-sdpa`` and ``hf-eager``, take their logits and their loss, and the
  default lists of rows; :class:`LossModule`, forward and loss as the one module that is compiled;
* :func:`generate_fn`, greedy generation for each candidate (``ref`` has no cache:
  :func:`naive_generate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tfs_decoder import Decoder, DecoderConfig, next_token_loss


@dataclass(frozen=True)
class Shape:
    """One model shape and batch, given to every candidate alike."""

    d_vocab: int
    d_model: int
    n_heads: int
    d_mlp: int
    n_layers: int
    n_ctx: int
    batch: int

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def tokens(self) -> int:
        return self.batch * self.n_ctx

    def describe(self) -> str:
        return (
            f"{self.n_layers} layers, d_model {self.d_model}, {self.n_heads} heads x d_head "
            f"{self.d_head}, d_mlp {self.d_mlp}, n_ctx {self.n_ctx}, batch {self.batch}, "
            f"d_vocab {self.d_vocab} ({self.tokens:,} tokens per step)"
        )


SHAPES = {
    # Character-level vocabulary; runs in seconds per round on a 2-core CPU.
    "cpu": Shape(d_vocab=100, d_model=256, n_heads=8, d_mlp=1024, n_layers=8, n_ctx=256, batch=8),
    # `tfs train`'s default widths (the old generate_cache.py's model, which had d_head 64).
    "cpu-small": Shape(
        d_vocab=100, d_model=128, n_heads=4, d_mlp=512, n_layers=8, n_ctx=128, batch=32
    ),
    # nanoGPT's CPU recipe for Shakespeare characters (4 layers of 128, context 64, batch
    # 12), the size of the curricula's exercises; benchmarks/shakespeare_char.py trains it.
    "nanogpt-char": Shape(
        d_vocab=65, d_model=128, n_heads=4, d_mlp=512, n_layers=4, n_ctx=64, batch=12
    ),
    # GPT-2 small's widths and vocabulary with 8 layers: a GPU shape.
    "gpt2-8l": Shape(
        d_vocab=50257, d_model=768, n_heads=12, d_mlp=3072, n_layers=8, n_ctx=1024, batch=16
    ),
    # For --verify-compile and quick checks of the script itself.
    "tiny": Shape(d_vocab=100, d_model=64, n_heads=4, d_mlp=256, n_layers=2, n_ctx=32, batch=2),
}


# ---------------------------------------------------------------------------------------
# The reference decoder: GPT-2 written with torch's high-level layers, the usual fast idiom.


class RefAttention(nn.Module):
    """Causal self-attention with one fused ``[d_model, 3 d_model]`` QKV projection."""

    def __init__(self, shape: Shape, manual: bool) -> None:
        super().__init__()
        self.n_heads = shape.n_heads
        self.manual = manual
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model)
        self.out = nn.Linear(shape.d_model, shape.d_model)
        self.hidden: Tensor
        hidden = torch.ones(shape.n_ctx, shape.n_ctx, dtype=torch.bool).triu(1)
        self.register_buffer("hidden", hidden, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, pos, d_model = x.shape
        # [batch, pos, 3, head, d_head] -> three [batch, head, pos, d_head]
        q, k, v = self.qkv(x).view(batch, pos, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        if self.manual:
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
            scores = scores.masked_fill(self.hidden[:pos, :pos], float("-inf"))
            z = torch.softmax(scores, dim=-1) @ v
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out: Tensor = self.out(z.transpose(1, 2).reshape(batch, pos, d_model))
        return out


class RefBlock(nn.Module):
    """Pre-LayerNorm GPT-2 block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, shape: Shape, manual: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(shape.d_model)
        self.attn = RefAttention(shape, manual)
        self.ln2 = nn.LayerNorm(shape.d_model)
        self.fc_in = nn.Linear(shape.d_model, shape.d_mlp)
        self.fc_out = nn.Linear(shape.d_mlp, shape.d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        out: Tensor = x + self.fc_out(F.gelu(self.fc_in(self.ln2(x)), approximate="tanh"))
        return out


class RefDecoder(nn.Module):
    """Token and learned position embeddings, blocks, final LayerNorm, untied head."""

    def __init__(self, shape: Shape, manual: bool = False) -> None:
        super().__init__()
        self.tok = nn.Embedding(shape.d_vocab, shape.d_model)
        self.pos = nn.Embedding(shape.n_ctx, shape.d_model)
        self.blocks = nn.ModuleList(RefBlock(shape, manual) for _ in range(shape.n_layers))
        self.ln_final = nn.LayerNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, shape.d_vocab, bias=False)
        for name, parameter in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(parameter)
            elif parameter.ndim >= 2:
                std = 0.02 / math.sqrt(2 * shape.n_layers) if "out" in name else 0.02
                nn.init.normal_(parameter, std=std)

    def forward(self, tokens: Tensor) -> Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok(tokens) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        logits: Tensor = self.head(self.ln_final(x))
        return logits


# ---------------------------------------------------------------------------------------
# Candidates: how to build each model and compute its loss.


def shifted_cross_entropy(logits: Tensor, tokens: Tensor) -> Tensor:
    """``F.cross_entropy`` of ``logits[:, p]`` against ``tokens[:, p + 1]``, mean."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def _tfs(shape: Shape, backend: str) -> Decoder:
    return Decoder(
        DecoderConfig(
            d_vocab=shape.d_vocab,
            d_model=shape.d_model,
            n_heads=shape.n_heads,
            d_head=shape.d_head,  # explicit: the config's default is 64
            d_mlp=shape.d_mlp,
            n_layers=shape.n_layers,
            n_ctx=shape.n_ctx,
            activation="gelu",
            positional="learned",
            attention_backend=backend,
        )
    )


def _tfs_fused(shape: Shape) -> Decoder:
    """tfs with torch's two fused kernels swapped in through its public seams:
    ``nn.LayerNorm`` modules for its LayerNorms (a block takes any module) and
    ``attention_backend="sdpa"``. Everything else is tfs's own, so the gap between this row
    and ``tfs`` is what those two kernels are worth, and the gap to ``ref`` the rest."""
    model = _tfs(shape, "sdpa")
    for block in model.blocks:
        block.ln1 = nn.LayerNorm(shape.d_model)
        block.ln2 = nn.LayerNorm(shape.d_model)
    model.ln_final = nn.LayerNorm(shape.d_model)
    return model


def _hf(shape: Shape, attn: str) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=shape.d_vocab,
        n_positions=shape.n_ctx,
        n_embd=shape.d_model,
        n_layer=shape.n_layers,
        n_head=shape.n_heads,
        n_inner=shape.d_mlp,
        activation_function="gelu_new",  # GPT-2's tanh approximation
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,  # as tfs and ref: W_U is its own matrix
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation=attn,
    )
    model: nn.Module = GPT2LMHeadModel(config)
    return model


def _hf_logits(model: nn.Module, tokens: Tensor) -> Tensor:
    logits: Tensor = model(input_ids=tokens).logits
    return logits


@dataclass(frozen=True)
class Candidate:
    name: str
    build: Callable[[Shape], nn.Module]
    logits: Callable[[nn.Module, Tensor], Tensor]
    loss: Callable[[Tensor, Tensor], Tensor]
    kv_cache: bool  # has generation with a key/value cache
    note: str


def _call(model: nn.Module, tokens: Tensor) -> Tensor:
    logits: Tensor = model(tokens)
    return logits


CANDIDATES = {
    c.name: c
    for c in (
        Candidate(
            "tfs",
            lambda s: _tfs(s, "manual"),
            _call,
            next_token_loss,
            True,
            "tfs_decoder.Decoder, from-scratch attention",
        ),
        Candidate(
            "tfs-sdpa",
            lambda s: _tfs(s, "sdpa"),
            _call,
            next_token_loss,
            True,
            'tfs_decoder.Decoder, attention_backend="sdpa"',
        ),
        Candidate(
            "tfs-fused",
            _tfs_fused,
            _call,
            next_token_loss,
            True,
            "tfs-sdpa with nn.LayerNorm for its LayerNorms: torch's two fused kernels",
        ),
        Candidate(
            "ref",
            lambda s: RefDecoder(s, manual=False),
            _call,
            shifted_cross_entropy,
            False,
            "nn.Linear/LayerNorm/Embedding + F.scaled_dot_product_attention",
        ),
        Candidate(
            "ref-manual",
            lambda s: RefDecoder(s, manual=True),
            _call,
            shifted_cross_entropy,
            False,
            "ref with masked-softmax attention written out",
        ),
        Candidate(
            "hf-sdpa",
            lambda s: _hf(s, "sdpa"),
            _hf_logits,
            shifted_cross_entropy,
            True,
            'transformers GPT2LMHeadModel, attn_implementation="sdpa"',
        ),
        Candidate(
            "hf-eager",
            lambda s: _hf(s, "eager"),
            _hf_logits,
            shifted_cross_entropy,
            True,
            'transformers GPT2LMHeadModel, attn_implementation="eager"',
        ),
    )
}
DEFAULT_TRAIN = {
    "cpu": ["tfs", "tfs-sdpa", "tfs-fused", "ref", "hf-sdpa", "hf-eager"],
    "cuda": ["tfs", "tfs-sdpa", "ref", "ref-manual", "hf-sdpa", "hf-eager"],
}
# Compiled rows, in the order they are compiled (the time budget may cut the last ones):
# first tfs and its like-for-like rival, compiled masked-softmax attention.
DEFAULT_COMPILED = ["tfs", "ref-manual", "ref", "tfs-sdpa", "hf-sdpa"]
DEFAULT_GENERATE = ["tfs", "ref", "hf-sdpa"]


class LossModule(nn.Module):
    """``loss(logits(model, tokens), tokens)`` as one module, so ``torch.compile`` sees the
    forward and the loss together (and backward through both)."""

    def __init__(self, model: nn.Module, candidate: Candidate) -> None:
        super().__init__()
        self.model = model
        self.candidate = candidate

    def forward(self, tokens: Tensor) -> Tensor:
        return self.candidate.loss(self.candidate.logits(self.model, tokens), tokens)


# ---------------------------------------------------------------------------------------
# Greedy generation, as each candidate does it.


def generation_models(names: list[str], shape: Shape) -> dict[str, nn.Module | Exception]:
    """One model per candidate for the generation timings, in eval mode. tfs's rows share
    one ``Decoder`` (seed 0), and transformers' rows are its twin (``to_hf_gpt2``, the
    same weights), so the rows must produce the same tokens; ``ref`` gets its own
    weights (seed 0). A candidate that cannot be built maps to the error."""
    from tfs_decoder import to_hf_gpt2

    models: dict[str, nn.Module | Exception] = {}
    tfs: Decoder | None = None
    for name in names:
        try:
            torch.manual_seed(0)
            if name not in ("tfs", "tfs-sdpa") and not name.startswith("hf"):
                models[name] = CANDIDATES[name].build(shape).eval()
                continue
            if tfs is None:
                tfs = _tfs(shape, "manual")
            if name == "tfs":
                model: nn.Module = tfs
            elif name == "tfs-sdpa":
                model = _tfs(shape, "sdpa")
                model.load_state_dict(tfs.state_dict())
            else:
                model = to_hf_gpt2(tfs)
                model.set_attn_implementation(name.removeprefix("hf-"))  # type: ignore[operator]
            models[name] = model.eval()
        except Exception as error:
            models[name] = error
    return models


@torch.no_grad()
def naive_generate(model: nn.Module, prompt: Tensor, new: int, n_ctx: int) -> Tensor:
    """Greedy decoding without a cache: every step runs the whole sequence so far."""
    tokens = prompt
    for _ in range(new):
        logits = model(tokens[:, -n_ctx:])
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


def generate_fn(
    candidate: Candidate, model: nn.Module, n_ctx: int, use_cache: bool
) -> Callable[[Tensor, int], Tensor]:
    """``fn(prompt, new)``: ``new`` greedy tokens after ``prompt``, with or without the cache."""
    if candidate.name.startswith("tfs"):
        assert isinstance(model, Decoder)
        return lambda prompt, new: model.generate(prompt, new, temperature=0.0, use_cache=use_cache)
    if candidate.name.startswith("hf"):
        generate: Callable[..., Tensor] = model.generate  # type: ignore[assignment]
        return lambda prompt, new: generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )
    return lambda prompt, new: naive_generate(model, prompt, new, n_ctx)
