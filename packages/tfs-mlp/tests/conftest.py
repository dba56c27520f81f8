"""Runtime shape and dtype checking for every test: jaxtyping's import hook wraps each
annotated function of tfs_mlp with typeguard's checker. Installed here, before any test
module imports the package; training code never sees it.
"""

from jaxtyping import install_import_hook

install_import_hook("tfs_mlp", "typeguard.typechecked")
