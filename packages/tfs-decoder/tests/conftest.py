"""Test settings for every test of this package.

Runtime shape and dtype checking: jaxtyping's import hook wraps each annotated function
of the four model packages (tfs_core's, in its own tests) with typeguard's checker.
Installed here, before any test module imports them; training code never sees it.
"""

import torch
from jaxtyping import install_import_hook

install_import_hook(
    ["tfs_decoder", "tfs_embeddings", "tfs_attention", "tfs_mlp"], "typeguard.typechecked"
)

# The tests' models are tiny: a second intra-op thread only adds hand-offs and spin-waits
# (measured 10-20x slower training steps on a busy 2-core machine), so use one.
torch.set_num_threads(1)
