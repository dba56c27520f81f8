"""What each ``tfs`` command does once its flags are parsed: train, sample, eval,
attention-plot. Each returns the exit status."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn

from tfs_decoder.hooks import hook_points
from tfs_decoder.training import trainer
from tfs_decoder.training.attention_plot import attention_patterns, plot_attention
from tfs_decoder.training.batches import eval_windows, split_ids
from tfs_decoder.training.budget import process_age_s
from tfs_decoder.training.checkpoint import CONFIG_FILE, Checkpoint
from tfs_decoder.training.corpus import load_text
from tfs_decoder.training.device import autocast, resolve_device, resolve_dtype
from tfs_decoder.training.errors import DataError, TfsError, UsageError
from tfs_decoder.training.evaluate import evaluate, generate
from tfs_decoder.training.flags import train_config_from_args, train_config_from_saved
from tfs_decoder.training.learner import learner_targets, verify_forward
from tfs_decoder.training.load import load_model
from tfs_decoder.training.tokenizer import Tokenizer, tail_chars, tokenizer_from_dict


def run_train(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k not in ("command", "handler")}
    config = train_config_from_args(options)
    # The budget counts from the process's start: the user's clock, torch's import included.
    trainer.train(config, progress=True, started=time.perf_counter() - process_age_s())
    return 0


# ---------------------------------------------------------------------------------------
# tfs sample and tfs eval


def _load(
    checkpoint: str, device_name: str, dtype_name: str
) -> tuple[nn.Module, Tokenizer, Checkpoint, torch.device, torch.dtype | None]:
    """The saved model on the device, its tokenizer, the checkpoint, device and dtype. A
    learner's module in it is run once on a small batch first (:mod:`.learner`)."""
    device = resolve_device(device_name)
    dtype = resolve_dtype(dtype_name, device)
    model, tokenizer_dict, saved = load_model(checkpoint, map_location=device)
    verify_forward(
        model, saved.model_config, learner_targets(saved.train_config), device=device,
        dtype=dtype, source=f"checkpoint {saved.path}",
    )  # fmt: skip
    return model, tokenizer_from_dict(tokenizer_dict), saved, device, dtype


def _encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The ids of ``--prompt``; a prompt that is empty or that the tokenizer cannot encode
    is a user error naming the flag."""
    if not prompt:
        raise UsageError("--prompt: expected at least one character, got ''")
    try:
        prompt_ids = tokenizer.encode(prompt)
    except TfsError as error:
        raise TfsError(f"--prompt: {error}") from error
    if not prompt_ids:
        raise TfsError(f"--prompt: {prompt!r} encodes to no tokens")
    return prompt_ids


def run_sample(args: argparse.Namespace) -> int:
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    prompt = args.prompt
    if prompt is None:
        default = saved.train_config.get("sample_prompt")
        prompt = default if isinstance(default, str) and default else "\n"
    prompt_ids = _encode_prompt(tokenizer, prompt)
    generator = torch.Generator(device=device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    with autocast(device, dtype):
        out = generate(
            model,
            tokens,
            args.max_new_tokens,
            n_ctx=saved.model_config.n_ctx,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            generator=generator,
        )
    ids = out[0].tolist()
    text: str = tokenizer.decode(ids)
    if not text.startswith(prompt):  # a prompt the tokenizer cannot round-trip exactly
        text = prompt + tokenizer.decode(ids[len(prompt_ids) :])
    print(text)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    settings = train_config_from_saved(saved.train_config, saved.path / CONFIG_FILE)
    n_ctx = saved.model_config.n_ctx
    if args.data is not None:
        text = load_text(args.data)
        what = f"all of {args.data}"
    else:
        text = load_text(settings.data)
        what = f"validation split of {settings.data or 'the built-in corpus'}"
    try:
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    except TfsError as error:
        raise TfsError(f"--data: {error}") from error
    if args.data is None:
        _, ids = split_ids(ids, settings.val_fraction, n_ctx)
    elif ids.numel() < n_ctx + 1:
        raise DataError(
            f"--data: {args.data!r} has {ids.numel()} tokens; the model needs at least "
            f"n_ctx + 1 = {n_ctx + 1} for one evaluation window"
        )
    batch_size = args.batch_size if args.batch_size is not None else settings.batch_size
    n_batches = args.eval_steps if args.eval_steps is not None else settings.resolved().eval_steps
    assert n_batches is not None  # resolved() derives it
    windows = eval_windows(ids, n_ctx, batch_size, n_batches)
    loss = evaluate(model, windows, device=device, dtype=dtype)
    chars = tail_chars(tokenizer, text, ids.tolist())
    bits_per_char = loss * ids.numel() / max(chars, 1) / math.log(2)
    print(
        f"val loss {loss:.4f} nats/token, {bits_per_char:.4f} bits/char "
        f"({what}: {ids.numel():,} tokens, {batch_size * n_batches} windows of {n_ctx}; "
        f"checkpoint {saved.path}, step {saved.step})"
    )
    return 0


# ---------------------------------------------------------------------------------------
# tfs attention-plot


def run_attention_plot(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out: expected a PNG file to write, got the directory {args.out!r}")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out: expected a file name ending in .png, got {args.out!r}")
    if not args.prompt:  # before loading the model: a mistake found in a moment
        raise UsageError("--prompt: expected at least one character, got ''")
    model, tokenizer, saved, device, dtype = _load(args.checkpoint, args.device, args.dtype)
    n_layers, n_ctx = saved.model_config.n_layers, saved.model_config.n_ctx
    if not -n_layers <= args.layer < n_layers:
        raise UsageError(
            f"--layer: expected a layer in [{-n_layers}, {n_layers - 1}] (the model has "
            f"{n_layers} layers; negative counts back from the last), got {args.layer}"
        )
    layer = args.layer % n_layers
    prompt_ids = _encode_prompt(tokenizer, args.prompt)
    if len(prompt_ids) > n_ctx:
        raise UsageError(
            f"--prompt: expected at most n_ctx={n_ctx} tokens (the model's context), got "
            f"{len(prompt_ids)} tokens"
        )
    hook = f"blocks.{layer}.attn.hook_pattern"
    if hook not in hook_points(model):  # a learner's attention or decoder
        raise UsageError(
            f"--checkpoint: expected a hook point {hook} to read the attention pattern from, "
            f"got a {type(model).__name__} without it; give your attention "
            "`self.hook_pattern = nn.Identity()` in __init__ and pass the pattern [batch, "
            "head, dest, src] through it in forward: `pattern = self.hook_pattern(pattern)`"
        )
    tokens = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    with autocast(device, dtype):
        patterns = attention_patterns(model, tokens, layer)[0]
    labels = [tokenizer.decode([i]) for i in prompt_ids]
    title = f"{saved.path} (step {saved.step}): layer {layer} attention, {len(labels)} tokens"
    try:
        plot_attention(patterns, labels, out, title=title)
    except OSError as error:
        raise TfsError(f"--out: cannot write {args.out!r}: {error.strerror or error}") from error
    heads = patterns.shape[0]
    print(f"wrote {out} (layer {layer}, {heads} heads, {len(labels)} tokens)")
    return 0
