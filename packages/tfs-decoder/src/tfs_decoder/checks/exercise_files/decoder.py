"""Exercise: the whole decoder. Write ``forward``, then check it with

    tfs check decoder {file}:Decoder

The constructor builds tfs's components; swap in your own classes as you write them
(keep the attribute names: the checks load tfs's weights by name).
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor, nn

from tfs_attention import MultiHeadAttention
from tfs_decoder import DecoderConfig, LayerNorm, ResidualBlock
from tfs_embeddings import Embed, LearnedPositionalEmbedding, Unembed
from tfs_mlp import MLP


class Decoder(nn.Module):
    """A GPT-2-style decoder-only transformer (Radford et al. 2019)::

        x_0     = W_E[tokens] + W_pos[positions]        # the residual stream
        x_{i+1} = blocks[i](x_i)                         # i = 0 .. n_layers - 1
        logits  = ln_final(x_n) W_U + b_U

    The logits at position ``p`` depend only on tokens ``<= p`` and predict token ``p + 1``.

    Shapes: tokens ``[batch, pos]`` (``pos <= n_ctx``) -> logits ``[batch, pos, d_vocab]``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        c = config
        self.embed = Embed(c.d_vocab, c.d_model)
        self.pos_embed = LearnedPositionalEmbedding(c.n_ctx, c.d_model)
        self.blocks = nn.ModuleList(
            ResidualBlock(
                c.d_model,
                MultiHeadAttention(c.d_model, c.n_heads, c.d_head),
                MLP(c.d_model, c.d_mlp),
                eps=c.ln_eps,
            )
            for _ in range(c.n_layers)
        )
        self.ln_final = LayerNorm(c.d_model, eps=c.ln_eps)
        self.unembed = Unembed(c.d_model, c.d_vocab)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        raise NotImplementedError
