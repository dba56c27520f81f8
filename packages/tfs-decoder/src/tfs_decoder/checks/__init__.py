"""The checks tfs's LayerNorm, ResidualBlock, Decoder and next-token loss pass, runnable on
a learner's own class or function.

``check_block(MyBlock)`` builds the class as tfs builds its own, expects tfs's parameter
names and shapes, and returns a :class:`Report`: one line per check, and for each failure
one sentence that names the concept with the evidence. Use it in a pytest test with
``assert report.ok, str(report)``, or from the shell with ``tfs check block FILE:CLASS``.

The decoder's learning check's task, sequence reversal, is the package's learning test
too: :func:`train_reversal`.
"""

from tfs_core.checking import CheckResult, Report
from tfs_decoder.checks.block import check_block
from tfs_decoder.checks.decoder import check_decoder
from tfs_decoder.checks.layernorm import check_layernorm
from tfs_decoder.checks.loss import check_loss
from tfs_decoder.checks.tasks import ReversalResult, reversal_batch, train_reversal

__all__ = [
    "CheckResult",
    "Report",
    "ReversalResult",
    "check_block",
    "check_decoder",
    "check_layernorm",
    "check_loss",
    "reversal_batch",
    "train_reversal",
]
