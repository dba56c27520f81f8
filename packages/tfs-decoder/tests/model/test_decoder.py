"""Decoder: shapes, causality, initialisation, parity with a reference built from torch layers."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import Decoder, DecoderConfig, ResidualBlock, next_token_loss
from tfs_embeddings import Embed, LearnedPositionalEmbedding
from tfs_mlp import MLP

pytestmark = pytest.mark.usefixtures("intra_op_threads")

SMALL = DecoderConfig(
    d_vocab=50, d_model=32, n_heads=4, d_head=6, d_mlp=48, n_layers=2, n_ctx=16, init_std=0.02
)


def tokens_for(config: DecoderConfig, batch: int, pos: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.d_vocab, (batch, pos), generator=g)


def build(config: DecoderConfig, seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    return Decoder(config)


def randomise_(model: Decoder, seed: int) -> None:
    """Move every parameter well away from its initial value (biases and LayerNorms included),
    so a test cannot pass because some parameter is 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=g)
            if name.endswith((".w", ".b", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")):
                parameter.add_(0.1 * noise)
            else:
                parameter.copy_(noise / math.sqrt(parameter.shape[-2]))


# ---------------------------------------------------------------------------------------
# Shapes and boundaries


@pytest.mark.parametrize(("batch", "pos"), [(3, 5), (2, 1), (1, 16), (4, 9)])
def test_logits_shape(batch: int, pos: int) -> None:
    model = build(SMALL)
    tokens = tokens_for(SMALL, batch, pos)
    before = tokens.clone()
    logits = model(tokens)
    assert logits.shape == (batch, pos, SMALL.d_vocab)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert torch.equal(tokens, before)  # the input is not mutated


def test_more_positions_than_n_ctx_is_rejected() -> None:
    model = build(SMALL)
    with pytest.raises(ValueError, match=r"n_ctx=16 positions, got 17"):
        model(tokens_for(SMALL, 2, SMALL.n_ctx + 1))


def test_sinusoidal_rejects_more_positions_than_n_ctx() -> None:
    config = dataclasses.replace(SMALL, positional="sinusoidal")
    with pytest.raises(ValueError, match=r"n_ctx=16 positions, got 20"):
        build(config)(tokens_for(config, 1, 20))


@pytest.mark.parametrize("bad", [-1, 50])
def test_token_ids_outside_the_vocabulary_are_rejected(bad: int) -> None:
    tokens = tokens_for(SMALL, 2, 3)
    tokens[1, 2] = bad
    with pytest.raises(ValueError, match=rf"d_vocab=50\), got id {bad}"):
        build(SMALL)(tokens)


@pytest.mark.parametrize("shape", [(2, 0), (0, 3)])
def test_empty_batch_or_sequence_is_rejected(shape: tuple[int, int]) -> None:
    with pytest.raises(
        ValueError, match=re.escape(f"tokens: expected shape [batch >= 1, pos >= 1], got {shape}")
    ):
        build(SMALL)(torch.zeros(shape, dtype=torch.long))


def test_float_tokens_are_rejected_naming_the_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build(SMALL)
    tokens = tokens_for(SMALL, 2, 3).float()
    with pytest.raises(TypeError, match="tokens"):  # the test-time checker's TypeCheckError
        model(tokens)
    # Without the checker (as users run it), Embed's own check names the dtype.
    monkeypatch.setattr(Embed, "forward", inspect.unwrap(Embed.forward))
    unchecked_forward = inspect.unwrap(Decoder.forward)
    with pytest.raises(
        TypeError, match=r"^tokens: expected an integer tensor, got dtype torch\.float32$"
    ):
        unchecked_forward(model, tokens)


def test_config_must_be_a_decoder_config() -> None:
    with pytest.raises(TypeError, match="config"):
        Decoder(dataclasses.asdict(SMALL))  # type: ignore[arg-type]


def test_shorter_input_gives_the_prefix_of_the_logits() -> None:
    # pos < n_ctx uses the first pos rows of W_pos: logits for a prefix equal the prefix
    # of the logits (a consequence of causality and absolute positions starting at 0).
    model = build(SMALL)
    randomise_(model, 1)
    tokens = tokens_for(SMALL, 3, SMALL.n_ctx)
    full = model(tokens)
    for pos in (1, 5, SMALL.n_ctx - 1):
        torch.testing.assert_close(model(tokens[:, :pos]), full[:, :pos], atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_gradient() -> None:
    model = build(SMALL)
    tokens = tokens_for(SMALL, 2, 7)
    loss: Tensor = next_token_loss(model(tokens), tokens)
    torch.autograd.backward(loss)
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_state_dict_round_trip() -> None:
    source, target = build(SMALL, seed=0), build(SMALL, seed=1)
    tokens = tokens_for(SMALL, 2, 6)
    assert not torch.equal(source(tokens), target(tokens))
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target(tokens), source(tokens), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------
# Causality


def assert_causal(model: Decoder, tokens: Tensor, j: int, min_change: float = 1e-4) -> None:
    """Changing token j leaves logits at positions < j bit-identical and changes position j."""
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 1) % model.config.d_vocab
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :j], before[:, :j], atol=0, rtol=0)
    assert (after[:, j:] - before[:, j:]).abs().amax() > min_change


@pytest.mark.parametrize("j", [0, 1, 7, 15])
def test_causal(j: int) -> None:
    model = build(SMALL)
    randomise_(model, 2)
    tokens = tokens_for(SMALL, 2, SMALL.n_ctx)
    assert_causal(model, tokens, j)
    if j < SMALL.n_ctx - 1:
        # Information does flow forward: some later position sees the change too.
        changed = tokens.clone()
        changed[:, j] = (changed[:, j] + 1) % SMALL.d_vocab
        with torch.no_grad():
            diff = (model(changed) - model(tokens))[:, j + 1 :].abs().amax()
        assert diff > 1e-4


@settings(max_examples=20, deadline=None)
@given(
    n_layers=st.integers(1, 2),
    n_heads=st.integers(1, 3),
    d_head=st.integers(1, 8),
    d_model=st.integers(4, 16),  # LayerNorm over 2 features outputs only +-1: degenerate
    d_mlp=st.integers(1, 16),
    d_vocab=st.integers(2, 20),
    n_ctx=st.integers(1, 12),
    batch=st.integers(1, 3),
    positional=st.sampled_from(["learned", "sinusoidal"]),
    data=st.data(),
)
def test_causal_property(
    n_layers: int,
    n_heads: int,
    d_head: int,
    d_model: int,
    d_mlp: int,
    d_vocab: int,
    n_ctx: int,
    batch: int,
    positional: str,
    data: st.DataObject,
) -> None:
    config = DecoderConfig(
        d_vocab=d_vocab,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=d_mlp,
        n_layers=n_layers,
        n_ctx=n_ctx,
        positional=positional,
    )
    pos = data.draw(st.integers(1, n_ctx), label="pos")
    j = data.draw(st.integers(0, pos - 1), label="j")
    model = build(config)
    randomise_(model, 3)
    tokens = tokens_for(config, batch, pos, seed=data.draw(st.integers(0, 2**16), label="seed"))
    logits = model(tokens)
    assert logits.shape == (batch, pos, d_vocab)
    assert_causal(model, tokens, j, min_change=1e-6)


# ---------------------------------------------------------------------------------------
# Initialisation

# Big enough that each weight has >= 65536 entries: the sample std of N normal draws has
# relative standard error 1/sqrt(2N) <= 0.3%, so a 3% tolerance is over 10 standard errors
# (and still catches the 1/sqrt(2 * n_layers) = 0.41 factor being missing or doubled).
INIT = DecoderConfig(
    d_vocab=1000, d_model=256, n_heads=8, d_head=32, d_mlp=1024, n_layers=3, n_ctx=256
)
STD_RTOL = 0.03


def expected_init(name: str, config: DecoderConfig) -> tuple[str, float]:
    """The initialisation each parameter must have: ("normal", std) or ("const", value)."""
    residual_std = config.init_std / math.sqrt(2 * config.n_layers)
    last = name.rsplit(".", 1)[-1]
    rules: dict[str, tuple[str, float]] = {
        "W_E": ("normal", config.init_std),
        "W_pos": ("normal", config.init_std),
        "W_Q": ("normal", config.init_std),
        "W_K": ("normal", config.init_std),
        "W_V": ("normal", config.init_std),
        "W_in": ("normal", config.init_std),
        "W_U": ("normal", config.init_std),
        "W_O": ("normal", residual_std),
        "W_out": ("normal", residual_std),
        "b_Q": ("const", 0.0),
        "b_K": ("const", 0.0),
        "b_V": ("const", 0.0),
        "b_O": ("const", 0.0),
        "b_in": ("const", 0.0),
        "b_out": ("const", 0.0),
        "b_U": ("const", 0.0),
        "w": ("const", 1.0),
        "b": ("const", 0.0),
    }
    assert last in rules, f"{name}: no initialisation rule in this test; add one"
    return rules[last]


def assert_initialised(model: Decoder) -> None:
    config = model.config
    for name, parameter in model.named_parameters():
        kind, value = expected_init(name, config)
        if kind == "const":
            assert torch.equal(parameter, torch.full_like(parameter, value)), name
        else:
            n = parameter.numel()
            assert n >= 65536, name
            std = parameter.std().item()
            assert abs(std / value - 1) < STD_RTOL, f"{name}: std {std:.5f}, expected {value:.5f}"
            # Mean zero within 5 standard errors of the mean.
            assert abs(parameter.mean().item()) < 5 * value / math.sqrt(n), name


def test_every_parameter_is_initialised_deliberately() -> None:
    model = build(INIT)
    names = [name for name, _ in model.named_parameters()]
    # One of each per block, and the model-level ones: nothing unexpected, nothing missing.
    assert len(names) == 3 + 1 + INIT.n_layers * 16 + 2
    assert_initialised(model)


def test_reset_parameters_redraws_with_the_same_scaling() -> None:
    model = build(INIT)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(3.0)
    model.reset_parameters()
    assert_initialised(model)
    for name, parameter in model.named_parameters():
        if expected_init(name, INIT)[0] == "normal":
            assert not torch.equal(parameter, before[name]), f"{name} was not re-drawn"
    # Resetting again must not compound the residual-write scaling.
    model.reset_parameters()
    assert_initialised(model)


@pytest.mark.parametrize("seed", [0, 1])
def test_untrained_loss_is_log_vocab(seed: int) -> None:
    # Small init_std makes the logits nearly equal, so the untrained loss is ln(d_vocab):
    # logits have std about 0.02 * sqrt(d_model) = 0.16 here, an excess of about 0.01 nats.
    config = DecoderConfig(
        d_vocab=2000, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_layers=2, n_ctx=32
    )
    model = build(config, seed=seed)
    tokens = tokens_for(config, 8, 32, seed=seed)
    with torch.no_grad():
        loss = next_token_loss(model(tokens), tokens).item()
    assert abs(loss - math.log(config.d_vocab)) < 0.1


# ---------------------------------------------------------------------------------------
# Parity with an independent reference built from torch layers


def sinusoids(n_ctx: int, d_model: int) -> Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)), written out."""
    table = torch.zeros(n_ctx, d_model, dtype=torch.float64)
    for p in range(n_ctx):
        for c in range(d_model):
            angle = p / 10000.0 ** ((c - c % 2) / d_model)
            table[p, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return table.float()


def reference_forward(model: Decoder, tokens: Tensor) -> Tensor:
    """GPT-2 forward pass from torch's layers, reading the Decoder's parameters.

    Weight mapping ([in, out] per head -> F.linear's [out, in] over concatenated heads):
    W_Q[h, d, e] -> weight[h * d_head + e, d]; W_O[h, e, d] -> weight[d, h * d_head + e].
    """
    c = model.config
    batch, pos = tokens.shape
    x = F.embedding(tokens, model.embed.W_E)
    if c.positional == "learned":
        assert isinstance(model.pos_embed, LearnedPositionalEmbedding)
        x = x + model.pos_embed.W_pos[:pos]
    else:
        x = x + sinusoids(c.n_ctx, c.d_model)[:pos]
    act: Callable[[Tensor], Tensor] = (
        (lambda t: F.gelu(t, approximate="tanh")) if c.activation == "gelu" else F.relu
    )
    for block in model.blocks:
        assert isinstance(block, ResidualBlock)
        a, m = block.attn, block.mlp
        assert isinstance(a, MultiHeadAttention)
        assert isinstance(m, MLP)
        h = F.layer_norm(x, (c.d_model,), block.ln1.w, block.ln1.b, eps=c.ln_eps)

        def heads(W: Tensor, b: Tensor, h: Tensor = h) -> Tensor:
            weight = W.permute(0, 2, 1).reshape(c.n_heads * c.d_head, c.d_model)
            out = F.linear(h, weight, b.reshape(-1))
            return out.view(batch, pos, c.n_heads, c.d_head).transpose(1, 2)

        q, k, v = heads(a.W_Q, a.b_Q), heads(a.W_K, a.b_K), heads(a.W_V, a.b_V)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        z = z.transpose(1, 2).reshape(batch, pos, c.n_heads * c.d_head)
        x = x + F.linear(z, a.W_O.reshape(c.n_heads * c.d_head, c.d_model).T, a.b_O)
        h = F.layer_norm(x, (c.d_model,), block.ln2.w, block.ln2.b, eps=c.ln_eps)
        x = x + F.linear(act(F.linear(h, m.W_in.T, m.b_in)), m.W_out.T, m.b_out)
    x = F.layer_norm(x, (c.d_model,), model.ln_final.w, model.ln_final.b, eps=c.ln_eps)
    return F.linear(x, model.unembed.W_U.T, model.unembed.b_U)


@pytest.mark.parametrize(
    ("activation", "positional", "batch", "pos"),
    [("gelu", "learned", 3, 11), ("relu", "sinusoidal", 2, 16), ("gelu", "learned", 1, 1)],
)
def test_parity_with_torch_reference(
    activation: str, positional: str, batch: int, pos: int
) -> None:
    # Tolerance: fp32, logits of order 1, atol 1e-5.
    config = dataclasses.replace(SMALL, activation=activation, positional=positional)
    model = build(config)
    randomise_(model, 4)
    tokens = tokens_for(config, batch, pos)
    with torch.no_grad():
        logits, expected = model(tokens), reference_forward(model, tokens)
    assert 0.1 < expected.std() < 10  # logits of order 1, so the tolerance means something
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_sinusoidal_has_no_positional_parameter() -> None:
    config = dataclasses.replace(SMALL, positional="sinusoidal")
    model = build(config)
    assert not any("W_pos" in key for key in model.state_dict())
    assert not any("W_pos" in name for name, _ in model.named_parameters())
    learned = build(SMALL)
    assert "pos_embed.W_pos" in learned.state_dict()
    n_learned = sum(p.numel() for p in learned.parameters())
    n_sinusoidal = sum(p.numel() for p in model.parameters())
    assert n_learned - n_sinusoidal == SMALL.n_ctx * SMALL.d_model
    # The same tokens at different positions get different logits: positions are encoded.
    tokens = torch.full((1, 4), 7)
    logits = model(tokens)
    assert (logits[0, 1:] - logits[0, :1]).abs().amax(dim=-1).min() > 1e-4


# ---------------------------------------------------------------------------------------
# Dropout


def test_dropout_acts_in_train_mode_only() -> None:
    config = dataclasses.replace(SMALL, dropout=0.3)
    model = build(config)
    tokens = tokens_for(config, 2, 9)
    model.eval()
    first, second = model(tokens), model(tokens)
    torch.testing.assert_close(first, second, atol=0, rtol=0)
    model.train()
    torch.manual_seed(0)
    train_a = model(tokens)
    train_b = model(tokens)
    assert (train_a - first).abs().amax() > 1e-3
    assert (train_a - train_b).abs().amax() > 1e-3
    torch.manual_seed(0)
    torch.testing.assert_close(model(tokens), train_a, atol=0, rtol=0)  # seeded: reproducible


def test_no_dropout_train_equals_eval() -> None:
    model = build(SMALL)
    tokens = tokens_for(SMALL, 2, 9)
    torch.testing.assert_close(model.train()(tokens), model.eval()(tokens), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------
# The default configuration


def expected_parameter_count(c: DecoderConfig) -> int:
    hd = c.n_heads * c.d_head
    attn = 3 * (c.d_model * hd + hd) + hd * c.d_model + c.d_model
    mlp = c.d_model * c.d_mlp + c.d_mlp + c.d_mlp * c.d_model + c.d_model
    block = 2 * 2 * c.d_model + attn + mlp
    embeddings = c.d_vocab * c.d_model + c.n_ctx * c.d_model
    return embeddings + c.n_layers * block + 2 * c.d_model + c.d_model * c.d_vocab + c.d_vocab


def test_parameter_count_matches_config() -> None:
    for config in (SMALL, INIT, dataclasses.replace(SMALL, n_heads=3, d_head=11, n_layers=4)):
        model = build(config)
        assert len(model.blocks) == config.n_layers
        assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(config)


def test_default_config_builds_an_8_layer_model() -> None:
    # About 135M parameters (untied W_E and W_U of 38.6M each); builds in well under a second.
    model = Decoder(DecoderConfig())
    assert len(model.blocks) == 8
    assert all(isinstance(block, ResidualBlock) for block in model.blocks)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == expected_parameter_count(DecoderConfig()) == 134_735_953
    block = model.blocks[0]
    assert isinstance(block, ResidualBlock)
    assert block.attn.W_Q.shape == (12, 768, 64)
    assert block.attn.W_O.shape == (12, 64, 768)
    assert block.mlp.W_in.shape == (768, 3072)
    with torch.no_grad():
        logits = model(torch.tensor([[464, 2068, 7586, 21831]]))
    assert logits.shape == (1, 4, 50257)


# ---------------------------------------------------------------------------------------
# Key/value cache and extension points


def test_forward_in_pieces_through_the_cache_equals_one_forward() -> None:
    model = build(SMALL).eval()
    randomise_(model, 1)
    tokens = tokens_for(SMALL, 3, 11)
    cache = model.make_kv_cache()
    assert [c.max_pos for c in cache] == [SMALL.n_ctx] * SMALL.n_layers
    pieces = [model(tokens[:, a:b], kv_cache=cache) for a, b in ((0, 6), (6, 7), (7, 11))]
    torch.testing.assert_close(torch.cat(pieces, 1), model(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_caches", [1, 3])
def test_a_cache_per_block_is_required(n_caches: int) -> None:
    model = build(SMALL)
    cache = model.make_kv_cache()[:1] * n_caches
    with pytest.raises(ValueError, match=r"kv_cache: expected 2 KVCache objects of equal length"):
        model(tokens_for(SMALL, 1, 3), kv_cache=cache)


class ScaledGatedMLP(nn.Module):
    """A user-defined GLU-style MLP whose residual-writing weight is named W_out."""

    def __init__(self, d_model: int, d_mlp: int, init_std: float) -> None:
        super().__init__()
        self.W_gate = nn.Parameter(init_std * torch.randn(d_model, d_mlp))
        self.W_up = nn.Parameter(init_std * torch.randn(d_model, d_mlp))
        self.W_out = nn.Parameter(init_std * torch.randn(d_mlp, d_model))

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = (torch.relu(x @ self.W_gate) * (x @ self.W_up)) @ self.W_out
        return out


def test_make_mlp_and_make_attn_build_every_block() -> None:
    """The factories are called once per block with the config; a custom W_out gets the
    1/sqrt(2 n_layers) residual-write scaling like the built-in one."""
    configs: list[DecoderConfig] = []

    def make_mlp(c: DecoderConfig) -> nn.Module:
        configs.append(c)
        return ScaledGatedMLP(c.d_model, c.d_mlp, c.init_std)

    torch.manual_seed(0)
    model = Decoder(INIT, make_mlp=make_mlp, make_attn=lambda c: MultiHeadAttention(c.d_model, 2))
    assert configs == [INIT] * INIT.n_layers
    for block in model.blocks:
        assert isinstance(block.mlp, ScaledGatedMLP)
        assert isinstance(block.attn, MultiHeadAttention)
        assert block.attn.n_heads == 2
        expected = INIT.init_std / math.sqrt(2 * INIT.n_layers)
        assert abs(block.mlp.W_out.std().item() / expected - 1) < STD_RTOL
        assert abs(block.mlp.W_up.std().item() / INIT.init_std - 1) < STD_RTOL
    assert model(tokens_for(INIT, 2, 5)).shape == (2, 5, INIT.d_vocab)


def test_sdpa_attention_backend_gives_the_same_logits_and_gradients() -> None:
    manual = build(SMALL)
    randomise_(manual, 2)
    sdpa = Decoder(dataclasses.replace(SMALL, attention_backend="sdpa"))
    sdpa.load_state_dict(manual.state_dict())
    assert all(getattr(block.attn, "backend", None) == "sdpa" for block in sdpa.blocks)
    tokens = tokens_for(SMALL, 3, 12)
    for model in (manual, sdpa):
        torch.autograd.backward(next_token_loss(model(tokens), tokens))
    torch.testing.assert_close(sdpa(tokens), manual(tokens), atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(manual.named_parameters(), sdpa.parameters(), strict=True):
        assert a.grad is not None, name
        assert b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)
    with pytest.raises(
        ValueError, match=r"attention_backend: expected one of \('manual', 'sdpa'\)"
    ):
        dataclasses.replace(SMALL, attention_backend="flash")
