"""``python -m tfs_decoder ...`` is the ``tfs`` command (and what ``torchrun -m`` starts)."""

import sys

from tfs_decoder.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
