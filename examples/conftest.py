"""Test settings for the examples, as in each package's tests/conftest.py.

jaxtyping's import hook wraps every annotated function of the four model packages with
typeguard's checker, so the examples' calls into them are shape-checked while tested.
Installed here, before the tests import the examples (and through them the packages).
"""

import torch
from jaxtyping import install_import_hook

install_import_hook(
    ["tfs_decoder", "tfs_embeddings", "tfs_attention", "tfs_mlp"], "typeguard.typechecked"
)

# Tiny models: a second intra-op thread only adds hand-offs on a busy 2-core machine.
torch.set_num_threads(1)
