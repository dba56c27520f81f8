"""Conversion to and from transformers' GPT-2 (``GPT2LMHeadModel``).

transformers is an optional dependency (``pip install "tfs-decoder[hf]"``); it is imported
only when a conversion runs, so importing ``tfs_decoder`` never imports it.

How the weights correspond. transformers stores GPT-2's projections as ``Conv1D`` layers,
which compute ``x @ weight + bias`` with ``weight`` stored ``[in, out]``, the same side as
ours, so no transposes are needed except for the unembedding::

    c_attn.weight [d_model, 3 d_model]   columns  q | k | v,  each  head 0 | head 1 | ...
        W_Q[h] = c_attn.weight[:, 0 d_model + h d_head : 0 d_model + (h + 1) d_head]
        W_K[h] = c_attn.weight[:, 1 d_model + h d_head : 1 d_model + (h + 1) d_head]
        W_V[h] = c_attn.weight[:, 2 d_model + h d_head : 2 d_model + (h + 1) d_head]
        (b_Q, b_K, b_V likewise from c_attn.bias [3 d_model])
    c_proj.weight [d_model, d_model]     rows are the heads' outputs z concatenated head-major
        W_O[h] = c_proj.weight[h d_head : (h + 1) d_head, :]        b_O = c_proj.bias
    mlp.c_fc  = (W_in, b_in)             mlp.c_proj = (W_out, b_out)
    ln_1, ln_2, ln_f = ln1, ln2, ln_final  (weight = w, bias = b)
    wte.weight = W_E     wpe.weight = W_pos     lm_head.weight = W_U^T     (GPT-2 has no b_U)

Both functions copy the weights: the converted model shares no storage with its source, so
training or editing one leaves the other unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tfs_decoder.config import DecoderConfig
from tfs_decoder.decoder import Decoder

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel
else:
    # At run time the name only serves annotations (which runtime type checkers such as
    # typeguard resolve); the functions check the type themselves.
    GPT2LMHeadModel = Any

_INSTALL_HINT = 'pip install "tfs-decoder[hf]"'

# transformers' activation names and ours. "gelu_new" and "gelu_pytorch_tanh" are both the
# tanh approximation of GELU that GPT-2 uses; transformers' plain "gelu" is the exact (erf)
# GELU, which tfs_mlp does not implement.
_ACTIVATION_FROM_HF = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "relu": "relu"}
_ACTIVATION_TO_HF = {"gelu": "gelu_new", "relu": "relu"}

# GPT-2's <|endoftext|> id, used as bos/eos when the vocabulary contains it.
_GPT2_END_OF_TEXT = 50256


def _copied_unchanged(n_layers: int) -> list[tuple[str, str]]:
    """(our name, transformers' name) of every tensor that is copied without reshaping."""
    pairs = [
        ("embed.W_E", "transformer.wte.weight"),
        ("pos_embed.W_pos", "transformer.wpe.weight"),
        ("ln_final.w", "transformer.ln_f.weight"),
        ("ln_final.b", "transformer.ln_f.bias"),
    ]
    for i in range(n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        pairs += [
            (ours + "ln1.w", theirs + "ln_1.weight"),
            (ours + "ln1.b", theirs + "ln_1.bias"),
            (ours + "ln2.w", theirs + "ln_2.weight"),
            (ours + "ln2.b", theirs + "ln_2.bias"),
            (ours + "attn.b_O", theirs + "attn.c_proj.bias"),
            (ours + "mlp.W_in", theirs + "mlp.c_fc.weight"),
            (ours + "mlp.b_in", theirs + "mlp.c_fc.bias"),
            (ours + "mlp.W_out", theirs + "mlp.c_proj.weight"),
            (ours + "mlp.b_out", theirs + "mlp.c_proj.bias"),
        ]
    return pairs


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            f"converting to or from GPT-2 needs transformers; install it with {_INSTALL_HINT}"
        ) from error
    return transformers


def _validate_hf_config(config: Any) -> None:
    """Raise ValueError for GPT-2 options that a :class:`Decoder` cannot reproduce."""
    if config.activation_function not in _ACTIVATION_FROM_HF:
        raise ValueError(
            f"model.config.activation_function: expected one of {sorted(_ACTIVATION_FROM_HF)}, "
            f"got {config.activation_function!r}"
        )
    if not config.scale_attn_weights:
        raise ValueError(
            "model.config.scale_attn_weights: expected True (scores divided by sqrt(d_head)), "
            "got False"
        )
    if config.scale_attn_by_inverse_layer_idx:
        raise ValueError(
            "model.config.scale_attn_by_inverse_layer_idx: expected False (no per-layer "
            "score scaling), got True"
        )
    if config.add_cross_attention:
        raise ValueError(
            "model.config.add_cross_attention: expected False (a Decoder has no "
            "cross-attention), got True"
        )
    dropouts = {
        "resid_pdrop": config.resid_pdrop,
        "embd_pdrop": config.embd_pdrop,
        "attn_pdrop": config.attn_pdrop,
    }
    if len(set(dropouts.values())) != 1:
        raise ValueError(
            f"model.config: expected resid_pdrop, embd_pdrop and attn_pdrop to be equal "
            f"(a Decoder has one dropout probability), got {dropouts}; set them equal on "
            f"model.config before converting (dropout acts only in training)"
        )


def _config_from_hf(hf: Any) -> DecoderConfig:
    """The :class:`DecoderConfig` of a GPT-2 config (see :func:`from_hf_gpt2`)."""
    _validate_hf_config(hf)
    d_model: int = hf.n_embd
    n_heads: int = hf.n_head
    return DecoderConfig(
        d_vocab=hf.vocab_size,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=hf.n_inner if hf.n_inner is not None else 4 * d_model,
        n_layers=hf.n_layer,
        n_ctx=hf.n_positions,
        activation=_ACTIVATION_FROM_HF[hf.activation_function],
        positional="learned",
        ln_eps=hf.layer_norm_epsilon,
        dropout=float(hf.resid_pdrop),
        init_std=hf.initializer_range,
    )


def _state_from_hf(model: Any, config: DecoderConfig) -> dict[str, Tensor]:
    """Our state dict, as views of ``model``'s tensors (see the module docstring)."""
    d_model, n_heads, d_head = config.d_model, config.n_heads, config.d_head
    source: dict[str, Tensor] = model.state_dict()
    state = {ours: source[theirs] for ours, theirs in _copied_unchanged(config.n_layers)}
    # lm_head computes x @ weight.T with weight [d_vocab, d_model]; it is tied to wte unless
    # the config says otherwise, and has no bias. Read from the module, since a tied weight
    # may be left out of the state dict.
    state["unembed.W_U"] = model.lm_head.weight.T
    state["unembed.b_U"] = state["embed.W_E"].new_zeros(config.d_vocab)
    for i in range(config.n_layers):
        hf_block, block = f"transformer.h.{i}.", f"blocks.{i}."
        c_attn_W = source[hf_block + "attn.c_attn.weight"]  # [d_model, 3 * d_model]
        c_attn_b = source[hf_block + "attn.c_attn.bias"]  # [3 * d_model]
        for j, name in enumerate("QKV"):
            columns = slice(j * d_model, (j + 1) * d_model)
            # [d_model, (head d_head)] -> [d_model, head, d_head] -> [head, d_model, d_head]
            state[block + f"attn.W_{name}"] = (
                c_attn_W[:, columns].reshape(d_model, n_heads, d_head).permute(1, 0, 2)
            )
            state[block + f"attn.b_{name}"] = c_attn_b[columns].reshape(n_heads, d_head)
        # Rows of c_proj.weight are indexed by (head d_head), head-major.
        state[block + "attn.W_O"] = source[hf_block + "attn.c_proj.weight"].reshape(
            n_heads, d_head, d_model
        )
    return state


def from_hf_gpt2(model: GPT2LMHeadModel) -> Decoder:
    """A :class:`Decoder` that computes the same logits as transformers' ``GPT2LMHeadModel``.

    The weights are copied (see the module docstring for the correspondence) and keep the
    model's dtype and device; the unembedding bias ``b_U`` is zero. The result is in eval
    mode, as transformers' ``from_pretrained`` models are; call ``.train()`` to fine-tune.

    Config correspondence: ``vocab_size -> d_vocab``, ``n_embd -> d_model``,
    ``n_head -> n_heads`` (``d_head = n_embd // n_head``), ``n_inner -> d_mlp`` (``None``
    means ``4 * n_embd``), ``n_layer -> n_layers``, ``n_positions -> n_ctx``,
    ``layer_norm_epsilon -> ln_eps``, ``resid_pdrop = embd_pdrop = attn_pdrop -> dropout``,
    ``initializer_range -> init_std``, ``activation_function`` ``"gelu_new"`` or
    ``"gelu_pytorch_tanh"`` ``-> "gelu"``, ``"relu" -> "relu"``.

    ``reorder_and_upcast_attn`` is accepted: it changes only how transformers' eager
    attention rounds under mixed precision (scores and softmax in float32), not the
    function computed; the Decoder computes attention in its parameters' dtype, so in fp16 or
    bf16 the two differ by rounding.

    Args:
        model: a ``transformers.GPT2LMHeadModel``.

    Raises:
        ImportError: transformers is not installed.
        TypeError: ``model`` is not a ``GPT2LMHeadModel``.
        ValueError: the config uses an option a Decoder cannot reproduce:
            ``activation_function`` other than the above, ``scale_attn_weights=False``,
            ``scale_attn_by_inverse_layer_idx=True``, ``add_cross_attention=True``, or
            unequal dropout probabilities.
    """
    transformers = _import_transformers()
    if not isinstance(model, transformers.GPT2LMHeadModel):
        raise TypeError(
            f"model: expected a transformers.GPT2LMHeadModel, got {type(model).__name__}"
        )
    config = _config_from_hf(model.config)
    state = _state_from_hf(model, config)

    # Build on the meta device (no memory, no random init), then take the copied tensors
    # as the parameters, which gives the model's dtype and device.
    with torch.device("meta"):
        decoder = Decoder(config)
    decoder.load_state_dict(
        {
            name: tensor.detach().clone(memory_format=torch.contiguous_format)
            for name, tensor in state.items()
        },
        assign=True,
    )
    return decoder.eval()


def _validate_convertible(c: DecoderConfig, source: dict[str, Tensor]) -> None:
    """Raise ValueError if GPT-2 cannot represent the decoder of config ``c`` with state
    ``source`` (see :func:`to_hf_gpt2`)."""
    if c.positional != "learned":
        raise ValueError(
            f"decoder.config.positional: expected 'learned' (GPT-2's positions), "
            f"got {c.positional!r}"
        )
    if c.n_heads * c.d_head != c.d_model:
        raise ValueError(
            f"decoder.config: expected n_heads * d_head == d_model (GPT-2 requires it), got "
            f"n_heads={c.n_heads} * d_head={c.d_head} = {c.n_heads * c.d_head}, "
            f"d_model={c.d_model}"
        )
    with torch.device("meta"):
        expected = set(Decoder(c).state_dict())
    if set(source) != expected:
        raise ValueError(
            f"decoder: expected the parameters of Decoder(decoder.config) (were modules "
            f"swapped?), missing {sorted(expected - set(source))}, "
            f"unexpected {sorted(set(source) - expected)}"
        )
    b_U = source["unembed.b_U"]
    if bool(b_U.any()):
        raise ValueError(
            f"decoder.unembed.b_U: expected all zeros (GPT-2's lm_head has no bias), got "
            f"{int(b_U.count_nonzero())} non-zero entries, max |b_U| = "
            f"{b_U.abs().max().item():.3g}"
        )


def _state_to_hf(source: dict[str, Tensor], c: DecoderConfig) -> dict[str, Tensor]:
    """transformers' state dict from ours (see the module docstring)."""
    d_model = c.d_model
    state = {theirs: source[ours] for ours, theirs in _copied_unchanged(c.n_layers)}
    state["lm_head.weight"] = source["unembed.W_U"].T
    for i in range(c.n_layers):
        hf_block, block = f"transformer.h.{i}.", f"blocks.{i}."
        # [head, d_model, d_head] -> [d_model, head, d_head] -> [d_model, (head d_head)]
        state[hf_block + "attn.c_attn.weight"] = torch.cat(
            [
                source[block + f"attn.W_{name}"].permute(1, 0, 2).reshape(d_model, d_model)
                for name in "QKV"
            ],
            dim=1,
        )
        state[hf_block + "attn.c_attn.bias"] = torch.cat(
            [source[block + f"attn.b_{name}"].reshape(d_model) for name in "QKV"]
        )
        state[hf_block + "attn.c_proj.weight"] = source[block + "attn.W_O"].reshape(
            d_model, d_model
        )

    return state


def to_hf_gpt2(decoder: Decoder) -> GPT2LMHeadModel:
    """A transformers ``GPT2LMHeadModel`` that computes the same logits as ``decoder``.

    The inverse of :func:`from_hf_gpt2`: the weights are copied into a new model of the
    decoder's dtype and device, returned in eval mode. The embedding and unembedding are
    tied (``tie_word_embeddings=True``, transformers' default) only when ``W_U`` equals
    ``W_E^T`` exactly; otherwise the model gets its own ``lm_head``. ``bos_token_id`` and
    ``eos_token_id`` are GPT-2's ``<|endoftext|>`` (50256) when ``d_vocab > 50256``, else
    ``None`` (a Decoder knows nothing of special tokens).

    Args:
        decoder: a :class:`Decoder` with learned positions and ``n_heads * d_head == d_model``.

    Raises:
        ImportError: transformers is not installed.
        TypeError: ``decoder`` is not a :class:`Decoder`.
        ValueError: GPT-2 cannot represent the decoder: non-learned positions,
            ``n_heads * d_head != d_model``, or a non-zero unembedding bias ``b_U``.
    """
    transformers = _import_transformers()
    if not isinstance(decoder, Decoder):
        raise TypeError(f"decoder: expected a tfs_decoder.Decoder, got {type(decoder).__name__}")
    c = decoder.config
    source = {name: tensor.detach() for name, tensor in decoder.state_dict().items()}
    _validate_convertible(c, source)

    W_E = source["embed.W_E"]
    W_U = source["unembed.W_U"]
    tied = torch.equal(W_U, W_E.T)
    special = _GPT2_END_OF_TEXT if c.d_vocab > _GPT2_END_OF_TEXT else None
    hf_config = transformers.GPT2Config(
        vocab_size=c.d_vocab,
        n_positions=c.n_ctx,
        n_embd=c.d_model,
        n_layer=c.n_layers,
        n_head=c.n_heads,
        n_inner=c.d_mlp,
        activation_function=_ACTIVATION_TO_HF[c.activation],
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=c.ln_eps,
        initializer_range=c.init_std,
        bos_token_id=special,
        eos_token_id=special,
        tie_word_embeddings=tied,
    )

    state = _state_to_hf(source, c)
    with torch.device(W_E.device):
        model = transformers.GPT2LMHeadModel(hf_config)
    model.to(dtype=W_E.dtype)
    # load_state_dict copies into the model's own parameters: no storage is shared.
    with torch.no_grad():
        model.load_state_dict(state)
    model.eval()
    return model
