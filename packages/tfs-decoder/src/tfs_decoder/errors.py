"""The errors ``tfs`` prints as one line, no traceback, that the model library raises too:
``tfs exercise`` and ``tfs check`` (:mod:`tfs_decoder.checks.exercise`) sit with the checks,
and the model library never imports the training application. The application's own
errors (a data file, a checkpoint) are in :mod:`tfs_decoder.training.errors`."""


class TfsError(Exception):
    """Bad input from the user (a data file, a checkpoint, a flag); the message says which."""


class UsageError(TfsError):
    """A command line argparse could not parse (unknown flag, bad value, missing argument)."""
