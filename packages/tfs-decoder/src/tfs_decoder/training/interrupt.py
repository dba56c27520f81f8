"""Ctrl-C during training: finish the step in progress, save it, then stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``SIGINT``) stopped :func:`~tfs_decoder.training.train` after a completed step.

    A ``KeyboardInterrupt``, so code that does not know it still sees an interrupt.

    Attributes:
        step: the optimizer steps completed (the step of the saved checkpoint).
        checkpoint: the checkpoint directory holding that step (``None`` on ranks other
            than 0).
    """

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        super().__init__(step, checkpoint)
        self.step = step
        self.checkpoint = checkpoint


class InterruptFlag:
    """Set by the first ``SIGINT`` while :func:`deferred_interrupt` is active."""

    def __init__(self) -> None:
        self.set = False


@contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Turn the first ``SIGINT`` into a flag the loop reads at the end of each step.

    The first Ctrl-C only sets the flag and puts the previous handler back, so a second one
    raises ``KeyboardInterrupt`` at once. Only the default handler is replaced, and only in
    the main thread (elsewhere signals cannot be handled; the flag then never gets set).
    """
    flag = InterruptFlag()
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.set = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
