"""The training application: the ``tfs`` command and everything behind ``tfs train``.

The model library (:mod:`tfs_decoder`) never imports this package; this package builds on it.
Here live the training loop (:func:`train`), its settings (:class:`TrainConfig`, presets),
checkpoints, the corpus, tokenizers, batches, devices, distributed setup, the progress line,
plots and the command line.
"""

from tfs_decoder.training.checkpoint import Checkpoint, save_checkpoint
from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.errors import CheckpointError, DataError, TfsError
from tfs_decoder.training.load import load_checkpoint, load_model
from tfs_decoder.training.presets import PRESETS, preset_config
from tfs_decoder.training.tokenizer import BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer
from tfs_decoder.training.trainer import TrainingInterrupted, TrainResult, evaluate, train

__all__ = [
    "PRESETS",
    "BPETokenizer",
    "CharTokenizer",
    "Checkpoint",
    "CheckpointError",
    "DataError",
    "TfsError",
    "Tokenizer",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "WordTokenizer",
    "evaluate",
    "load_checkpoint",
    "load_model",
    "preset_config",
    "save_checkpoint",
    "train",
]
