"""The transformer MLP block and its activations, from basic tensor operations."""

from tfs_mlp.activations import ACTIVATIONS, gelu, relu
from tfs_mlp.mlp import MLP

__all__ = ["ACTIVATIONS", "MLP", "gelu", "relu"]
