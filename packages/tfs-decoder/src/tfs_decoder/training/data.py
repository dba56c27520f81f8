"""The text of a training run: loaded, tokenised once, split into training and validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

from tfs_decoder.training.batches import WindowSampler, eval_windows, split_ids
from tfs_decoder.training.checkpoint import Checkpoint
from tfs_decoder.training.config import TrainConfig
from tfs_decoder.training.corpus import load_text
from tfs_decoder.training.distributed import DistInfo, broadcast_object
from tfs_decoder.training.errors import CheckpointError
from tfs_decoder.training.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    tail_chars,
    tokenizer_from_dict,
)


@dataclass(frozen=True)
class RunData:
    """What a run trains and validates on.

    Attributes:
        tokenizer: fitted to the text, or the resumed checkpoint's.
        text_sha256: the text's hash, saved in checkpoints so a resume can check it.
        train_ids, val_ids: the token stream, split (validation from its end).
        sampler: this rank's training batches, a pure function of ``(seed, index, rank)``.
        tokens_per_char: validation tokens per validation character (bits/char conversion).
    """

    tokenizer: Tokenizer
    text_sha256: str
    train_ids: Tensor
    val_ids: Tensor
    sampler: WindowSampler
    tokens_per_char: float

    def val_windows(
        self, config: TrainConfig, device: torch.device, n_batches: int
    ) -> list[tuple[Tensor, Tensor]]:
        """``n_batches`` fixed validation batches on ``device``."""
        windows = eval_windows(self.val_ids, config.n_ctx, config.batch_size, n_batches)
        return [(x.to(device), y.to(device)) for x, y in windows]


def load_run_data(config: TrainConfig, info: DistInfo, checkpoint: Checkpoint | None) -> RunData:
    """Load ``config.data``, take the checkpoint's tokenizer or fit one (on rank 0, shared
    with the others), tokenise and split.

    Raises:
        DataError: the text is missing, empty or too short.
        CheckpointError: the checkpoint was trained on other text or another tokenizer.
    """
    if checkpoint is not None:
        _verify_tokenizer_kind(config, checkpoint)
    text = load_text(config.data)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if checkpoint is not None:
        tokenizer = _checkpoint_tokenizer(checkpoint, text_sha256)
    elif info.enabled:
        # Fit once on rank 0 and share it: every rank must agree on the vocabulary.
        fitted = _fit_tokenizer(config, text) if info.is_main else None
        tokenizer = tokenizer_from_dict(
            broadcast_object(fitted.to_dict() if fitted is not None else None, info)
        )
    else:
        tokenizer = _fit_tokenizer(config, text)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    train_ids, val_ids = split_ids(ids, config.val_fraction, config.n_ctx)
    sampler = WindowSampler(
        train_ids,
        config.n_ctx,
        config.batch_size,
        config.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val_chars = tail_chars(tokenizer, text, val_ids.tolist())
    return RunData(
        tokenizer=tokenizer,
        text_sha256=text_sha256,
        train_ids=train_ids,
        val_ids=val_ids,
        sampler=sampler,
        tokens_per_char=val_ids.numel() / max(val_chars, 1),
    )


def _verify_tokenizer_kind(config: TrainConfig, checkpoint: Checkpoint) -> None:
    saved_kind = checkpoint.tokenizer.get("kind")
    if saved_kind != config.tokenizer:
        raise CheckpointError(
            f"checkpoint: {checkpoint.path} was trained with --tokenizer {saved_kind}, "
            f"the flags ask for --tokenizer {config.tokenizer}"
        )


def _checkpoint_tokenizer(checkpoint: Checkpoint, text_sha256: str) -> Tokenizer:
    saved_sha = checkpoint.state.get("data_sha256")
    if saved_sha is not None and saved_sha != text_sha256:
        raise CheckpointError(
            f"checkpoint: {checkpoint.path} was trained on different text (sha256 "
            f"{str(saved_sha)[:12]}..., --data gives {text_sha256[:12]}...); "
            "resume with the same --data"
        )
    return tokenizer_from_dict(checkpoint.tokenizer)


def _fit_tokenizer(config: TrainConfig, text: str) -> Tokenizer:
    if config.tokenizer == "bpe":
        return BPETokenizer.fit(text, vocab_size=config.bpe_vocab_size)
    if config.tokenizer == "word":
        return WordTokenizer.fit(text, vocab_size=config.word_vocab_size)
    return CharTokenizer.fit(text)
