"""Multi-head attention from basic tensor operations, with per-head W_Q, W_K, W_V, W_O.

Terminology follows Elhage et al. (2021), "A Mathematical Framework for Transformer
Circuits": attention reads the residual stream at source positions and writes it at
destination positions.
"""

from tfs_attention.attention import MultiHeadAttention
from tfs_attention.kv_cache import KVCache

__all__ = ["KVCache", "MultiHeadAttention"]
