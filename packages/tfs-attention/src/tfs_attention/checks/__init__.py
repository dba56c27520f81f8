"""The checks tfs's MultiHeadAttention passes, runnable on any attention class.

``check_attention(MyAttention)`` builds the class as tfs builds its own
(``MyAttention(d_model=32, n_heads=2)``), expects tfs's parameter names and shapes, and
returns a :class:`Report`: one line per check, and for each failure one sentence that
names the concept with the evidence. Use it in a pytest test with
``assert report.ok, str(report)``, or from the shell with ``tfs check attention FILE:CLASS``.

The known mistakes it names are in :mod:`tfs_attention.checks.attention_mistakes`. The
learning check's task, fetching the flagged value, is the package's learning test too:
:func:`fetch_accuracy`.
"""

from tfs_attention.checks.attention import check_attention
from tfs_attention.checks.tasks import fetch_accuracy, fetch_batch
from tfs_core.checking import CheckResult, Report

__all__ = ["CheckResult", "Report", "check_attention", "fetch_accuracy", "fetch_batch"]
