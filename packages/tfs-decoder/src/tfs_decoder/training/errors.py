"""Errors a user can cause and fix: the command line prints them as one line, no traceback.

:class:`TfsError` and :class:`UsageError` are defined in :mod:`tfs_decoder.errors`, since
``tfs exercise`` and ``tfs check`` raise them from the model library too."""

from tfs_decoder.errors import TfsError, UsageError

__all__ = ["CheckpointError", "DataError", "TfsError", "UsageError", "one_line"]


class DataError(TfsError, ValueError):
    """The training text is missing, empty, binary, or too short."""


class CheckpointError(TfsError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the requested model."""


def one_line(message: str) -> str:
    """``message``'s non-blank lines, stripped and joined by ``"; "``."""
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
