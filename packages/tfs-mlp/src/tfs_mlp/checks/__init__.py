"""The checks tfs's MLP passes, runnable on any MLP class.

``check_mlp(MyMLP)`` builds the class as tfs builds its own (``MyMLP(d_model=8,
d_mlp=32)``), expects tfs's parameter names and shapes, and returns a :class:`Report`:
one line per check, and for each failure one sentence that names the concept with the
evidence. Use it in a pytest test with ``assert report.ok, str(report)``, or from the
shell with ``tfs check mlp FILE:CLASS``.

The known mistakes it names are in :mod:`tfs_mlp.checks.mlp_mistakes`. The learning
check's task, the parity of three bits, is the package's learning test too:
:func:`train_parity`.
"""

from tfs_core.checking import CheckResult, Report
from tfs_mlp.checks.mlp import check_mlp
from tfs_mlp.checks.tasks import parity_batch, train_parity

__all__ = ["CheckResult", "Report", "check_mlp", "parity_batch", "train_parity"]
