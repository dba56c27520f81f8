"""Conversion to and from transformers' GPT-2: the same logits, the same greedy text.

Parity with an independent implementation is the strongest single test a model can have
(minGPT's test against transformers). Nothing is downloaded: both sides are small models
whose every parameter is re-drawn from a seeded normal (biases non-zero, LayerNorm weights
near 1), so a bias or LayerNorm mapped to the wrong place changes the logits.

Tolerances: float32 logits agree within ``ATOL = 1e-4``; the measured worst difference in
these tests is 3.8e-6 (eager and sdpa alike; logits have std ~1.2). float64 logits agree
within 1e-10; measured 6e-15.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from tfs_attention import MultiHeadAttention
from tfs_decoder import Decoder, DecoderConfig, ResidualBlock, from_hf_gpt2, to_hf_gpt2

ATOL = 1e-4  # float32; measured differences up to 3.8e-6
D_VOCAB, N_CTX, D_MODEL, N_HEADS, N_LAYERS = 100, 32, 64, 4, 2
D_HEAD = D_MODEL // N_HEADS

# LayerNorm gains, named as each side names them; they are drawn around 1, the rest around 0.
_LN_WEIGHTS = (".ln_1.weight", ".ln_2.weight", "ln_f.weight", ".ln1.w", ".ln2.w", "ln_final.w")


@torch.no_grad()
def _redraw(model: nn.Module, seed: int, std: float = 0.15) -> None:
    """Re-draw every parameter from N(0, std), LayerNorm gains from N(1, std).

    A Decoder's ``unembed.b_U`` stays zero, since GPT-2 has no output bias. Tied
    parameters appear once in ``named_parameters`` and so stay tied.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = std * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        if name == "unembed.b_U":
            continue
        parameter.copy_(noise + 1.0 if name.endswith(_LN_WEIGHTS) else noise)


def _hf_model(seed: int = 0, attn_implementation: str = "eager", **overrides: Any) -> Any:
    """A random-init GPT2LMHeadModel with seeded, non-trivial weights, in eval mode."""
    options: dict[str, Any] = {
        "vocab_size": D_VOCAB,
        "n_positions": N_CTX,
        "n_embd": D_MODEL,
        "n_layer": N_LAYERS,
        "n_head": N_HEADS,
        # Ids inside the tiny vocabulary (GPT-2's 50256 draws a config warning). No eos:
        # generate() would stop at it, while the reference loop below never stops early.
        "bos_token_id": 0,
        "eos_token_id": None,
        "attn_implementation": attn_implementation,
    }
    options.update(overrides)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**options))
    _redraw(model, seed)
    return model.eval()


def _decoder(seed: int = 0, **overrides: Any) -> Decoder:
    """A Decoder the size of `_hf_model`, every parameter re-drawn (``b_U`` stays zero)."""
    options: dict[str, Any] = {
        "d_vocab": D_VOCAB,
        "d_model": D_MODEL,
        "n_heads": N_HEADS,
        "d_head": D_HEAD,
        "d_mlp": 4 * D_MODEL,
        "n_layers": N_LAYERS,
        "n_ctx": N_CTX,
    }
    options.update(overrides)
    torch.manual_seed(seed)
    decoder = Decoder(DecoderConfig(**options))
    _redraw(decoder, seed)
    return decoder.eval()


def _tokens(batch: int, pos: int, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, D_VOCAB, (batch, pos), generator=generator)


def _hf_logits(model: Any, tokens: Tensor) -> Tensor:
    with torch.no_grad():
        logits: Tensor = model(tokens).logits
    return logits


def _logits(decoder: Decoder, tokens: Tensor) -> Tensor:
    with torch.no_grad():
        logits: Tensor = decoder(tokens)
    return logits


def _assert_state_dicts_equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------- from_hf_gpt2


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_from_hf_gpt2_logits_match(attn_implementation: str) -> None:
    model = _hf_model(attn_implementation=attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    decoder = from_hf_gpt2(model)
    tokens = _tokens(3, 17)  # batch != pos, pos < n_ctx
    expected = _hf_logits(model, tokens)
    actual = _logits(decoder, tokens)
    assert expected.std() > 0.5  # logits far from flat (std ~1.2), so a wrong mapping shows
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    # The full context and a single position too.
    for tokens in (_tokens(2, N_CTX, seed=2), _tokens(1, 1, seed=3)):
        torch.testing.assert_close(
            _logits(decoder, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
        )


def test_from_hf_gpt2_attention_patterns_match_per_head() -> None:
    """Head h of the Decoder is head h of GPT-2 (equal logits alone would not show a
    head order that is permuted consistently across W_Q, W_K, W_V and W_O)."""
    model = _hf_model()
    decoder = from_hf_gpt2(model)
    tokens = _tokens(2, 9)
    with torch.no_grad():
        out = model(tokens, output_attentions=True, output_hidden_states=True)
        for i, block in enumerate(decoder.blocks):
            assert isinstance(block, ResidualBlock)
            assert isinstance(block.attn, MultiHeadAttention)
            # hidden_states[i] is the residual stream entering block i.
            x = block.ln1(out.hidden_states[i])
            attn = block.attn
            q = torch.einsum("bpd,hde->bhpe", x, attn.W_Q) + attn.b_Q[:, None, :]
            k = torch.einsum("bpd,hde->bhpe", x, attn.W_K) + attn.b_K[:, None, :]
            scores = q @ k.transpose(-1, -2) / math.sqrt(D_HEAD)
            future = torch.ones(9, 9, dtype=torch.bool).triu(diagonal=1)
            pattern = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
            torch.testing.assert_close(pattern, out.attentions[i], atol=1e-5, rtol=0)


def test_from_hf_gpt2_greedy_continuation_matches() -> None:
    model = _hf_model()
    decoder = from_hf_gpt2(model)
    prompt = _tokens(2, 5, seed=4)
    new_tokens = 20
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=new_tokens,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    # Reference greedy loop: append the argmax of the last position's logits (no cache).
    tokens = prompt
    steps = []
    for _ in range(new_tokens):
        last = _logits(decoder, tokens)[:, -1]
        steps.append(last)
        tokens = torch.cat([tokens, last.argmax(dim=-1, keepdim=True)], dim=1)
    assert tokens.shape == (2, 5 + new_tokens)
    assert torch.equal(tokens, out.sequences)
    # transformers' per-step logits (computed with its KV cache) agree with ours...
    ours = torch.stack(steps, dim=1)  # [batch, step, d_vocab]
    torch.testing.assert_close(ours, torch.stack(out.logits, dim=1), atol=ATOL, rtol=0)
    # ...and each argmax won by a margin far above that tolerance (measured: min 3.6e-3,
    # median 0.27, against differences ~3e-6), so the choices are not decided by noise.
    top2 = ours.topk(2, dim=-1).values
    assert (top2[..., 0] - top2[..., 1]).min() > 10 * ATOL
    # The continuation is not one token repeated (that would make the check weak).
    assert len(set(tokens[:, 5:].flatten().tolist())) > 5


@pytest.mark.parametrize(
    ("activation_function", "activation"),
    [("relu", "relu"), ("gelu_new", "gelu"), ("gelu_pytorch_tanh", "gelu")],
)
def test_from_hf_gpt2_n_inner_and_activation(activation_function: str, activation: str) -> None:
    model = _hf_model(n_inner=48, activation_function=activation_function)
    decoder = from_hf_gpt2(model)
    assert decoder.config.d_mlp == 48
    assert decoder.config.activation == activation
    tokens = _tokens(2, 11)
    torch.testing.assert_close(
        _logits(decoder, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
    )
    # And back: the HF model built from the decoder keeps n_inner and the activation.
    back = to_hf_gpt2(decoder)
    assert back.config.n_inner == 48
    assert back.config.activation_function == ("relu" if activation == "relu" else "gelu_new")
    torch.testing.assert_close(
        _hf_logits(back, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
    )


def test_from_hf_gpt2_config_and_mode() -> None:
    model = _hf_model(resid_pdrop=0.2, embd_pdrop=0.2, attn_pdrop=0.2, layer_norm_epsilon=1e-3)
    model.train()
    decoder = from_hf_gpt2(model)
    assert decoder.config == DecoderConfig(
        d_vocab=D_VOCAB,
        d_model=D_MODEL,
        n_heads=N_HEADS,
        d_head=D_HEAD,
        d_mlp=4 * D_MODEL,
        n_layers=N_LAYERS,
        n_ctx=N_CTX,
        activation="gelu",
        positional="learned",
        ln_eps=1e-3,
        dropout=0.2,
        init_std=model.config.initializer_range,
    )
    assert not decoder.training
    assert decoder.unembed.b_U.count_nonzero() == 0
    model.eval()  # dropout off on both sides, then the logits agree (ln_eps included)
    tokens = _tokens(2, 7)
    torch.testing.assert_close(
        _logits(decoder, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
    )


def test_from_hf_gpt2_reorder_and_upcast_attn_is_accepted() -> None:
    """The option changes only mixed-precision rounding in eager attention."""
    model = _hf_model(reorder_and_upcast_attn=True)
    decoder = from_hf_gpt2(model)
    tokens = _tokens(2, 13)
    torch.testing.assert_close(
        _logits(decoder, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
    )


def test_from_hf_gpt2_copies_and_leaves_the_model_unchanged() -> None:
    model = _hf_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    decoder = from_hf_gpt2(model)
    _assert_state_dicts_equal(model.state_dict(), before)
    hf_storage = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    for name, tensor in decoder.state_dict().items():
        assert tensor.untyped_storage().data_ptr() not in hf_storage, name
    tokens = _tokens(2, 6)
    logits = _logits(decoder, tokens)
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
        model.transformer.h[0].attn.c_attn.weight.mul_(2.0)
    torch.testing.assert_close(_logits(decoder, tokens), logits, atol=0, rtol=0)


def test_from_hf_gpt2_keeps_dtype() -> None:
    model = _hf_model().double()
    decoder = from_hf_gpt2(model)
    assert {p.dtype for p in decoder.parameters()} == {torch.float64}
    tokens = _tokens(2, 9)
    torch.testing.assert_close(
        _logits(decoder, tokens), _hf_logits(model, tokens), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"activation_function": "gelu"}, r"activation_function.*got 'gelu'"),
        ({"activation_function": "silu"}, r"activation_function.*got 'silu'"),
        ({"scale_attn_weights": False}, r"scale_attn_weights: expected True.*got False"),
        (
            {"scale_attn_by_inverse_layer_idx": True},
            r"scale_attn_by_inverse_layer_idx: expected False.*got True",
        ),
        ({"add_cross_attention": True}, r"add_cross_attention: expected False.*got True"),
        ({"attn_pdrop": 0.0}, r"resid_pdrop, embd_pdrop and attn_pdrop.*'attn_pdrop': 0.0"),
    ],
)
def test_from_hf_gpt2_rejects_unsupported_config(overrides: dict[str, Any], match: str) -> None:
    model = _hf_model(**overrides)
    with pytest.raises(ValueError, match=match):
        from_hf_gpt2(model)


def test_from_hf_gpt2_rejects_other_models() -> None:
    torch.manual_seed(0)
    base = GPT2Model(
        GPT2Config(
            vocab_size=D_VOCAB,
            n_positions=N_CTX,
            n_embd=D_MODEL,
            n_layer=1,
            n_head=N_HEADS,
            bos_token_id=0,
            eos_token_id=None,
        )
    )
    with pytest.raises(
        TypeError, match=r"model: expected a transformers.GPT2LMHeadModel, got GPT2Model"
    ):
        from_hf_gpt2(base)


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = _decoder()
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "tfs-decoder\[hf\]"'):
        to_hf_gpt2(decoder)
    with pytest.raises(ImportError, match=r'pip install "tfs-decoder\[hf\]"'):
        from_hf_gpt2(object())


# ---------------------------------------------------------------- to_hf_gpt2


def test_to_hf_gpt2_logits_match_and_round_trip() -> None:
    decoder = _decoder()
    model = to_hf_gpt2(decoder)
    assert not model.training
    # Decoder's W_U is drawn independently of W_E, so the HF model must not tie them.
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight is not model.transformer.wte.weight
    tokens = _tokens(3, 15)
    torch.testing.assert_close(
        _hf_logits(model, tokens), _logits(decoder, tokens), atol=ATOL, rtol=0
    )
    _assert_state_dicts_equal(from_hf_gpt2(model).state_dict(), decoder.state_dict())


def test_to_hf_gpt2_ties_embeddings_when_W_U_is_W_E_transposed() -> None:
    decoder = _decoder()
    with torch.no_grad():
        decoder.unembed.W_U.copy_(decoder.embed.W_E.T)
    model = to_hf_gpt2(decoder)
    assert model.config.tie_word_embeddings is True
    assert model.lm_head.weight is model.transformer.wte.weight
    tokens = _tokens(2, 10)
    torch.testing.assert_close(
        _hf_logits(model, tokens), _logits(decoder, tokens), atol=ATOL, rtol=0
    )
    _assert_state_dicts_equal(from_hf_gpt2(model).state_dict(), decoder.state_dict())


def test_hf_round_trip_from_hf_side() -> None:
    """GPT-2 -> Decoder -> GPT-2 gives back the same parameters, tied or untied."""
    for tie in (True, False):
        model = _hf_model(tie_word_embeddings=tie)
        assert (model.lm_head.weight is model.transformer.wte.weight) == tie
        decoder = from_hf_gpt2(model)
        tokens = _tokens(2, 6)
        torch.testing.assert_close(
            _logits(decoder, tokens), _hf_logits(model, tokens), atol=ATOL, rtol=0
        )
        back = to_hf_gpt2(decoder)
        assert back.config.tie_word_embeddings is tie
        _assert_state_dicts_equal(back.state_dict(), model.state_dict())


def test_to_hf_gpt2_copies_keeps_dtype_and_config() -> None:
    decoder = _decoder(dropout=0.1, ln_eps=1e-4, init_std=0.05).double().train()
    model = to_hf_gpt2(decoder)
    assert not model.training
    assert decoder.training  # the decoder's own mode is left alone
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert {p.device for p in model.parameters()} == {decoder.embed.W_E.device}
    config = model.config
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.1, 0.1, 0.1)
    assert config.layer_norm_epsilon == 1e-4
    assert config.initializer_range == 0.05
    assert (config.bos_token_id, config.eos_token_id) == (None, None)  # 50256 >= d_vocab
    decoder.eval()
    tokens = _tokens(2, 8)
    logits = _hf_logits(model, tokens)
    torch.testing.assert_close(logits, _logits(decoder, tokens), atol=1e-10, rtol=0)
    with torch.no_grad():
        decoder.embed.W_E.add_(1.0)
        attn = decoder.blocks[1].attn
        assert isinstance(attn, MultiHeadAttention)
        attn.W_O.mul_(2.0)
    torch.testing.assert_close(_hf_logits(model, tokens), logits, atol=0, rtol=0)


def test_to_hf_gpt2_rejects_output_bias() -> None:
    decoder = _decoder()
    with torch.no_grad():
        decoder.unembed.b_U[3] = 0.5
    with pytest.raises(ValueError, match=r"b_U: expected all zeros .*got 1 non-zero entries"):
        to_hf_gpt2(decoder)


def test_to_hf_gpt2_rejects_sinusoidal_positions() -> None:
    decoder = _decoder(positional="sinusoidal")
    with pytest.raises(ValueError, match=r"positional: expected 'learned'.*got 'sinusoidal'"):
        to_hf_gpt2(decoder)


def test_to_hf_gpt2_rejects_head_width_mismatch() -> None:
    decoder = _decoder(d_head=8)  # 4 heads * 8 = 32 != d_model 64
    with pytest.raises(ValueError, match=r"n_heads \* d_head == d_model.*= 32, d_model=64"):
        to_hf_gpt2(decoder)


def test_to_hf_gpt2_rejects_swapped_modules() -> None:
    decoder = _decoder()
    decoder.blocks[0].mlp = nn.Sequential(nn.Linear(D_MODEL, D_MODEL))
    with pytest.raises(ValueError, match=r"decoder: expected the parameters of Decoder"):
        to_hf_gpt2(decoder)


def test_to_hf_gpt2_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="decoder"):
        to_hf_gpt2(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_to_hf_gpt2_uses_end_of_text_when_the_vocabulary_has_it() -> None:
    torch.manual_seed(0)
    decoder = Decoder(
        DecoderConfig(d_vocab=50257, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_layers=1, n_ctx=4)
    )
    model = to_hf_gpt2(decoder)
    assert (model.config.bos_token_id, model.config.eos_token_id) == (50256, 50256)
