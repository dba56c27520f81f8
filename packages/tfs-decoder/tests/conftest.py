"""Runtime shape and dtype checking for every test: jaxtyping's import hook wraps each
annotated function of the four tfs packages with typeguard's checker. Installed here,
before any test module imports them; training code never sees it.
"""

from jaxtyping import install_import_hook

install_import_hook(
    ["tfs_decoder", "tfs_embeddings", "tfs_attention", "tfs_mlp"], "typeguard.typechecked"
)
