"""The decoder's configuration: one small dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from tfs_attention.attention import BACKENDS
from tfs_core.validation import require_positive_ints

ACTIVATIONS = ("gelu", "relu")
POSITIONAL = ("learned", "sinusoidal")


@dataclass(frozen=True)
class DecoderConfig:
    """Sizes and options of a :class:`~tfs_decoder.Decoder`.

    Defaults are GPT-2 small's widths with 8 layers instead of 12.

    Attributes:
        d_vocab: number of token ids.
        d_model: width of the residual stream.
        n_heads: attention heads per layer.
        d_head: width of one head (``n_heads * d_head`` need not equal ``d_model``).
        d_mlp: hidden width of the MLP.
        n_layers: number of residual blocks.
        n_ctx: the longest sequence the model accepts.
        activation: the MLP's activation, ``"gelu"`` (tanh approximation) or ``"relu"``.
        positional: ``"learned"`` (GPT-2) or ``"sinusoidal"`` (Attention Is All You Need).
        ln_eps: LayerNorm epsilon.
        dropout: dropout probability on embeddings, attention patterns and sublayer outputs.
        init_std: standard deviation of the normal initialisation; the weights that write
            the residual stream (``W_O``, ``W_out``) get ``init_std / sqrt(2 * n_layers)``.
        attention_backend: ``"manual"`` (from scratch, the default) or ``"sdpa"`` (torch's
            fused ``scaled_dot_product_attention``; see ``tfs_attention.MultiHeadAttention``).
    """

    d_vocab: int = 50257
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 64
    d_mlp: int = 3072
    n_layers: int = 8
    n_ctx: int = 1024
    activation: str = "gelu"
    positional: str = "learned"
    ln_eps: float = 1e-5
    dropout: float = 0.0
    init_std: float = 0.02
    attention_backend: str = "manual"

    def __post_init__(self) -> None:
        sizes = ("d_vocab", "d_model", "n_heads", "d_head", "d_mlp", "n_layers", "n_ctx")
        require_positive_ints(**{name: getattr(self, name) for name in sizes})
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {self.activation!r}")
        if self.positional not in POSITIONAL:
            raise ValueError(f"positional: expected one of {POSITIONAL}, got {self.positional!r}")
        if not self.ln_eps > 0:
            raise ValueError(f"ln_eps: expected a positive float, got {self.ln_eps!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.attention_backend not in BACKENDS:
            raise ValueError(
                f"attention_backend: expected one of {BACKENDS}, got {self.attention_backend!r}"
            )
        if not self.init_std > 0:
            raise ValueError(f"init_std: expected a positive float, got {self.init_std!r}")
