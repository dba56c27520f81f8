"""What the tfs packages share: the hook point (:mod:`tfs_core.hook_point`), the dispatch
of an op written both as its formula and as a faster computation
(:mod:`tfs_core.fast_op`), argument validation (:mod:`tfs_core.validation`) and the runner
of the learner checks with its one :class:`~tfs_core.checking.Report`
(:mod:`tfs_core.checking`).

A learner or a user imports the components from their own packages; this one is what
they are built on.
"""

from tfs_core.checking import Report
from tfs_core.hook_point import HookPoint

__all__ = ["HookPoint", "Report"]
