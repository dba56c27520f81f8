"""The checks tfs's Embed, Unembed and LearnedPositionalEmbedding pass, runnable on any class.

``check_embed(MyEmbed)`` builds the class as tfs builds its own (``MyEmbed(d_vocab=20,
d_model=12)``), expects tfs's parameter names and shapes, and returns a :class:`Report`:
one line per check, and for each failure one sentence that names the concept with the
evidence. ``check_unembed`` and ``check_pos_embed`` do the same for ``Unembed(d_model,
d_vocab)`` and ``LearnedPositionalEmbedding(n_ctx, d_model)``. Use them in a pytest test
with ``assert report.ok, str(report)``, or from the shell with ``tfs check embed
FILE:CLASS`` (``unembed``, ``pos-embed``).

The learning tasks of the checks (a bigram map, a label per position) are the package's
learning tests too: :func:`train_deterministic_bigram` and :func:`train_position_labels`.
"""

from tfs_core.checking import CheckResult, Report
from tfs_embeddings.checks.embed import check_embed
from tfs_embeddings.checks.pos_embed import check_pos_embed
from tfs_embeddings.checks.tasks import (
    BigramModel,
    token_cross_entropy,
    train_deterministic_bigram,
    train_position_labels,
)
from tfs_embeddings.checks.unembed import check_unembed

__all__ = [
    "BigramModel",
    "CheckResult",
    "Report",
    "check_embed",
    "check_pos_embed",
    "check_unembed",
    "token_cross_entropy",
    "train_deterministic_bigram",
    "train_position_labels",
]
