"""Token embedding, unembedding and positional encodings, from basic tensor operations.

Terminology follows Elhage et al. (2021), "A Mathematical Framework for Transformer
Circuits": the embeddings write the residual stream, the unembedding reads it out.
"""

from tfs_embeddings.embed import Embed
from tfs_embeddings.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from tfs_embeddings.unembed import Unembed

__all__ = ["Embed", "LearnedPositionalEmbedding", "SinusoidalPositionalEncoding", "Unembed"]
