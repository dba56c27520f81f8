"""Test settings for every test of this package: runtime shape and dtype checks on
tfs_core's annotated functions (jaxtyping's import hook with typeguard), installed before
any test imports the package, and one intra-op thread, as the other packages' tests use."""

import torch
from jaxtyping import install_import_hook

install_import_hook("tfs_core", "typeguard.typechecked")
torch.set_num_threads(1)
