"""Errors a user can cause and fix: the command line prints them as one line, no traceback."""


class TfsError(Exception):
    """Bad input from the user (a data file, a checkpoint, a flag); the message says which."""


class DataError(TfsError, ValueError):
    """The training text is missing, empty, binary, or too short."""


class CheckpointError(TfsError, ValueError):
    """A checkpoint is missing, corrupt, or does not match the requested model."""


class UsageError(TfsError):
    """A command line argparse could not parse (unknown flag, bad value, missing argument)."""


def one_line(message: str) -> str:
    """``message``'s non-blank lines, stripped and joined by ``"; "``."""
    return "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
