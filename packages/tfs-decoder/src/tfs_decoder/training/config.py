"""The settings of a training run: one dataclass whose fields are ``tfs train``'s flags."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from tfs_attention.attention import BACKENDS
from tfs_decoder.config import DecoderConfig
from tfs_decoder.training.errors import TfsError

TOKENIZERS = ("char", "bpe", "word")
# Minutes of the time budget a run gets when neither --time-budget nor --max-steps is given.
DEFAULT_TIME_BUDGET = 10.0
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,  # resolved per device by resolve_dtype
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


class ConfigError(TfsError, ValueError):
    """A training setting is out of range; the message names the flag."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Every setting of a training run; each field is the ``tfs train`` flag of that name
    (``d_model`` is ``--d-model``).

    The defaults are the ``cpu`` preset, what ``tfs train`` runs with no arguments: the
    8-layer model, 128 wide, on 128-character windows, for as many steps as fit in a
    10-minute time budget; :mod:`tfs_decoder.training.presets` holds the others.

    A field left at ``None`` is derived from the others when the run starts
    (:meth:`resolved`), so a default never refuses a flag the user gave: ``--max-steps 8``
    alone gets 0 warmup steps and an evaluation every step, ``--lr 1e-4`` alone ends its
    cosine at ``1e-5``.

    Attributes:
        data: a text file or a folder of ``.txt`` files; ``None`` = the built-in corpus.
        out: the run directory (checkpoints, ``metrics.jsonl``, ``loss.png``, ``sample.txt``).
        tokenizer: ``"char"``, ``"bpe"`` (byte-level BPE of ``bpe_vocab_size`` tokens) or
            ``"word"`` (the pieces of ``re.split(r"\\b", text)``: the ``word_vocab_size - 1``
            most frequent and one unknown token for the others).
        word_vocab_size: the vocabulary cap of ``tokenizer="word"``, unknown token included.
            The default 2000 covers 94.6% of the built-in corpus's 130k pieces (6,100
            distinct on CPython 3.11; 1000 covers 89.7%, 4000 98.4%), and its ``W_E`` and
            ``W_U`` (0.5M parameters at ``d_model=128``) stay below the 1.6M of the rest of
            the ``cpu`` model.
        d_model, n_layers, n_heads, d_mlp, n_ctx, dropout: the model (``d_head = d_model //
            n_heads``).
        batch_size: windows per micro-batch per process; ``grad_accum`` micro-batches make
            one optimiser step, so a step sees ``batch_size * grad_accum * world_size`` windows.
        lr, min_lr, warmup_steps, max_steps: the schedule
            (:func:`~tfs_decoder.training.optim.lr_at`). ``max_steps=None``: as many steps as
            fit in the time budget. ``min_lr=None``: ``lr / 10``. ``warmup_steps=None``:
            ``min(100, max_steps // 10)``.
        time_budget: minutes the whole run may take (setup, steps, evaluations, checkpoints,
            sample). Without ``max_steps`` the step count is fitted to it from the measured
            speed of the first steps; with ``max_steps`` it is a deadline that ends the run
            early if the steps do not fit. ``None``: 10 minutes when ``max_steps`` is
            ``None``, else no budget; ``0``: no budget.
        max_epochs: the most passes over the training text a step count chosen by the time
            budget may make (``0``: no limit); it never shortens a ``max_steps`` given.
            A small text is memorised past about ten passes: the default model on the
            built-in corpus ends at 1.18 nats/char after 10 and at 1.25 after 15.
        weight_decay: AdamW's decoupled weight decay, on matrices only. The default 0.5
            (GPT-2 and the other presets: 0.1) slows the memorising of the 419k-character
            built-in corpus: after 1,047 steps the validation loss is 1.183 instead of 1.198.
        init_std: the std of the weights' normal initialisation
            (:class:`~tfs_decoder.DecoderConfig`'s ``init_std``). The default 0.05 is GPT-2's
            0.02 scaled to this preset's width (``0.02 * sqrt(768 / 128)``). With 0.02 the
            128-wide model starts about 100 steps later (validation loss 1.83 at step 300
            against 1.57) and ends 0.04 nats higher after 900 steps.
        eval_interval, eval_steps: evaluate every ``eval_interval`` steps on ``eval_steps``
            fixed batches of the validation split (and after the last step). ``None``:
            ``min(100, ceil(max_steps / 10))`` and ``min(20, max(2, max_steps // 5))``.
        seed: seeds the model's initialisation, the batches, dropout and the sample.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"mps"``.
        dtype: ``"auto"`` (bf16 autocast on CUDA where supported, else float32),
            ``"float32"``/``"fp32"`` or ``"bfloat16"``/``"bf16"`` (autocast).
        compile: wrap the model in ``torch.compile`` for training.
        attention_backend: ``"manual"`` (from scratch) or ``"sdpa"`` (torch's fused
            attention kernels; see :class:`~tfs_decoder.DecoderConfig`).
        model: ``FILE.py:Class`` (or ``package.module:Class``), the learner's whole decoder,
            trained instead of tfs's; ``attention``, ``mlp``, ``layernorm``: the learner's
            component, in tfs's decoder instead of its own (see
            :mod:`~tfs_decoder.training.learner`). ``None``: tfs's.
        resume: continue from the latest checkpoint in ``out``.
        val_fraction: the share of the token stream, from its end, kept for validation.
        grad_clip: clip the gradient's global norm to this; ``0`` disables clipping.
        sample_tokens, sample_prompt: the sample generated at the end (0 tokens: none).
        log_interval: steps between ``metrics.jsonl`` lines (and progress lines off a terminal).
        checkpoint_minutes: minutes of wall time between checkpoints (``0``: none by time).
        checkpoint_interval: steps between checkpoints (``0``: none by step count). One is
            always written at the end.
    """

    data: str | None = None
    out: str = "runs/tfs"
    tokenizer: str = "char"
    bpe_vocab_size: int = 1024
    word_vocab_size: int = 2000
    d_model: int = 128
    n_layers: int = 8
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 128
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 5e-3
    min_lr: float | None = None
    warmup_steps: int | None = None
    max_steps: int | None = None
    time_budget: float | None = None
    max_epochs: float = 10.0
    weight_decay: float = 0.5
    dropout: float = 0.0
    init_std: float = 0.05
    eval_interval: int | None = None
    eval_steps: int | None = None
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    attention_backend: str = "manual"
    model: str | None = None
    attention: str | None = None
    mlp: str | None = None
    layernorm: str | None = None
    resume: bool = False
    val_fraction: float = 0.1
    grad_clip: float = 1.0
    sample_tokens: int = 500
    sample_prompt: str = "\n"
    log_interval: int = 10
    checkpoint_minutes: float = 2.0
    checkpoint_interval: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first flag whose value is out of range."""
        positive = (
            "bpe_vocab_size",
            "d_model",
            "n_layers",
            "n_heads",
            "d_mlp",
            "n_ctx",
            "batch_size",
            "grad_accum",
            "log_interval",
        )
        for name in positive:
            _validate_int(name, getattr(self, name), minimum=1)
        for name in ("max_steps", "eval_interval", "eval_steps"):
            _validate_int(name, getattr(self, name), minimum=1, optional=True)
        for name in ("checkpoint_interval", "sample_tokens", "seed"):
            _validate_int(name, getattr(self, name), minimum=0)
        _validate_int("warmup_steps", self.warmup_steps, minimum=0, optional=True)
        _validate_int("word_vocab_size", self.word_vocab_size, minimum=2)  # a piece and <unk>
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"--n-heads: expected a divisor of --d-model={self.d_model} "
                f"(d_head = d_model / n_heads), got {self.n_heads}"
            )
        if (
            self.warmup_steps is not None
            and self.max_steps is not None
            and self.warmup_steps > self.max_steps
        ):
            raise ConfigError(
                f"--warmup-steps: expected at most --max-steps={self.max_steps}, "
                f"got {self.warmup_steps}"
            )
        _validate_float("lr", self.lr, low=0.0, low_open=True)
        if self.min_lr is not None:
            _validate_float("min_lr", self.min_lr, low=0.0, high=self.lr, what=f"<= --lr={self.lr}")
        if self.time_budget is not None:
            _validate_float("time_budget", self.time_budget, low=0.0)
        _validate_float("max_epochs", self.max_epochs, low=0.0)
        _validate_float("checkpoint_minutes", self.checkpoint_minutes, low=0.0)
        _validate_float("weight_decay", self.weight_decay, low=0.0)
        _validate_float("dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        _validate_float("init_std", self.init_std, low=0.0, low_open=True)
        _validate_float("val_fraction", self.val_fraction, low=0.0, high=1.0, low_open=True,
                     high_open=True)  # fmt: skip
        _validate_float("grad_clip", self.grad_clip, low=0.0)
        _validate_choice("tokenizer", self.tokenizer, TOKENIZERS)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"--device: expected one of {DEVICES}, got {self.device!r}")
        _validate_choice("attention_backend", self.attention_backend, BACKENDS)
        self._validate_learner_modules()
        _validate_choice("dtype", self.dtype, tuple(DTYPES))
        if not isinstance(self.sample_prompt, str):
            raise ConfigError(f"sample_prompt: expected a str, got {self.sample_prompt!r}")

    def _validate_learner_modules(self) -> None:
        parts = {"attention": self.attention, "mlp": self.mlp, "layernorm": self.layernorm}
        for name, target in {"model": self.model, **parts}.items():
            if target is not None and not isinstance(target, str):
                raise ConfigError(f"{_flag(name)}: expected a str FILE.py:Class, got {target!r}")
        given = [f"{_flag(name)} {target}" for name, target in parts.items() if target]
        if self.model is not None and given:
            raise ConfigError(
                f"--model: expected no --attention, --mlp or --layernorm with it (they go into "
                f"tfs's decoder, --model replaces it), got --model {self.model} and "
                + ", ".join(given)
            )

    def budget_seconds(self) -> float | None:
        """The run's time budget in seconds, or ``None`` when it has none: ``time_budget``
        if given (``0``: none), else :data:`DEFAULT_TIME_BUDGET` minutes when ``max_steps``
        is not given either."""
        if self.time_budget is not None:
            return self.time_budget * 60.0 if self.time_budget > 0 else None
        return DEFAULT_TIME_BUDGET * 60.0 if self.max_steps is None else None

    def resolved(self, max_steps: int | None = None) -> TrainConfig:
        """These settings with ``max_steps`` (given here when the time budget chose it),
        every field left at ``None`` derived from it (see the class docstring) and
        ``time_budget`` in minutes (``0``: none). A checkpoint saves these, so a resumed run
        keeps the step count and the schedule.

        A ``warmup_steps`` the user gave that is longer than the ``max_steps`` a time budget
        chose is shortened to it: the budget then leaves no room for more.
        """
        steps = self.max_steps if max_steps is None else max_steps
        if steps is None:
            raise ValueError("max_steps: expected an int, got None (no time budget chose it)")
        warmup = min(100, steps // 10) if self.warmup_steps is None else self.warmup_steps
        budget_s = self.budget_seconds()
        return dataclasses.replace(
            self,
            max_steps=steps,
            time_budget=0.0 if budget_s is None else budget_s / 60,
            warmup_steps=min(warmup, steps),
            min_lr=self.lr / 10 if self.min_lr is None else self.min_lr,
            eval_interval=self.eval_interval or min(100, math.ceil(steps / 10)),
            eval_steps=self.eval_steps or min(20, max(2, steps // 5)),
        )

    def model_config(self, d_vocab: int) -> DecoderConfig:
        """The :class:`~tfs_decoder.DecoderConfig` these settings describe."""
        return DecoderConfig(
            d_vocab=d_vocab,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_mlp=self.d_mlp,
            n_layers=self.n_layers,
            n_ctx=self.n_ctx,
            dropout=self.dropout,
            init_std=self.init_std,
            attention_backend=self.attention_backend,
        )


def _validate_int(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ConfigError(f"{_flag(name)}: expected {expected}, got {value!r}")


def _validate_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{_flag(name)}: expected one of {choices}, got {value!r}")


def _validate_float(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    what: str | None = None,
) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        if what is None:
            left = "(" if low_open else "["
            right = ")" if high_open or high == math.inf else "]"
            what = f"in {left}{low:g}, {high:g}{right}"
        raise ConfigError(f"{_flag(name)}: expected a number {what}, got {value!r}")
