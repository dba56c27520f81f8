"""The checks tfs's next-token loss passes, runnable on any loss function."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tfs_core.checking import (
    Catalogue,
    Check,
    CheckFailed,
    Report,
    Subject,
    Unmet,
    max_difference,
    output,
    run_checks,
)
from tfs_decoder.checks import loss_mistakes
from tfs_decoder.loss import next_token_loss

BATCH, POS, D_VOCAB = 3, 7, 11
TOLERANCE = 1e-5
"""float32: losses of order 1 agree with tfs's to about 1e-7."""
LOSS = "next_token_loss(logits, tokens)"


def _logits(seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, POS, D_VOCAB, generator=gen) * 3


def _tokens(seed: int = 1) -> Tensor:
    """Different tokens at every position of a row, so that a position is the only one
    whose logits favour its token (and a softmax over positions cannot be told apart)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(D_VOCAB, generator=gen)[:POS] for _ in range(BATCH)])


def _loss(subject: Subject, logits: Tensor, tokens: Tensor) -> Tensor:
    loss = output(subject.call(logits, tokens), LOSS)
    if loss.shape != ():
        raise CheckFailed(
            f"for logits {list(logits.shape)} the loss has shape {list(loss.shape)}, not a "
            f"scalar — average the per-position losses into one number (.mean())"
        )
    return loss


def _value(subject: Subject, logits: Tensor, tokens: Tensor) -> float:
    with torch.no_grad():
        return float(_loss(subject, logits, tokens))


def _scalar(subject: Subject) -> None:
    loss = _loss(subject, _logits(), _tokens())
    if loss.dtype != torch.float32:
        raise CheckFailed(f"dtype: float32 logits gave a {loss.dtype} loss")


def _same_as_tfs(subject: Subject) -> None:
    logits, tokens = _logits(), _tokens()
    got, want = _value(subject, logits, tokens), float(next_token_loss(logits, tokens))
    if not abs(got - want) <= TOLERANCE:
        raise CheckFailed(
            f"the loss is {got:.6g}, tfs's {want:.6g} on the same logits and tokens "
            f"(tolerance {TOLERANCE:g})"
        )


def _confident(tokens: Tensor, shift: int) -> Tensor:
    """Logits that put nearly all probability on ``tokens[:, p + shift]`` at position ``p``
    (zeros where that is past the end)."""
    logits = torch.zeros(BATCH, POS, D_VOCAB)
    targets = tokens[:, shift:]
    logits[:, : POS - shift] = 20.0 * F.one_hot(targets, D_VOCAB).float()
    return logits


def _shift(subject: Subject) -> None:
    tokens = _tokens()
    got = _value(subject, _confident(tokens, 1), tokens)
    if got <= 1e-4:
        return
    unshifted = _value(subject, _confident(tokens, 0), tokens)
    seen = (
        f", while logits on the token at the same position gave {abs(unshifted):.2g}"
        if unshifted <= 1e-4
        else ""
    )
    raise CheckFailed(
        f"logits that put all probability on the next token (tokens[:, p + 1] at position "
        f"p) gave loss {got:.3g}, not about 0{seen} — shift by one: position p predicts "
        f"token p + 1, so compare logits[:, :-1] with tokens[:, 1:]"
    )


def _per_position_constant_moves(subject: Subject) -> tuple[float, float]:
    """The loss before and after adding one random number to every logit of a position."""
    logits, tokens = _logits(), _tokens()
    shift = torch.randn(BATCH, POS, 1, generator=torch.Generator().manual_seed(2)) * 3
    return _value(subject, logits, tokens), _value(subject, logits + shift, tokens)


def _vocabulary_axis(subject: Subject) -> None:
    before, after = _per_position_constant_moves(subject)
    if not abs(after - before) <= 1e-4:
        raise CheckFailed(
            f"adding the same number to every vocabulary entry of a position changed the "
            f"loss from {before:.4g} to {after:.4g}, which a softmax over the vocabulary "
            f"cannot see — take log_softmax over the vocabulary axis (dim=-1, size d_vocab), "
            f"not over positions"
        )


def _mean(subject: Subject) -> None:
    """With uniform logits every prediction costs ``ln d_vocab``, so their mean does too."""
    got = _value(subject, torch.zeros(BATCH, POS, D_VOCAB), _tokens())
    each = math.log(D_VOCAB)
    if abs(got - each) <= 1e-4:
        return
    guesses = {
        BATCH * (POS - 1): ", the sum over all predictions",
        POS - 1: ", the sum over positions",
        BATCH: ", the sum over the batch",
        (POS - 1) / POS: ", as if the last position (which predicts nothing) were counted",
    }
    seen = next((text for k, text in guesses.items() if abs(got / each - k) < 1e-3), "")
    raise CheckFailed(
        f"with uniform logits every prediction costs ln({D_VOCAB}) = {each:.4f}, so their mean "
        f"does too; got {got:.4g} = {got / each:.3g} x that{seen} — average over every "
        f"predicted position, batch and pos alike (.mean() over [batch, pos - 1])"
    )


def _gradient(subject: Subject) -> None:
    tokens = _tokens()
    logits, logits_ref = (_logits().requires_grad_() for _ in range(2))
    loss = _loss(subject, logits, tokens)
    if loss.requires_grad:
        torch.autograd.backward(loss)
    if logits.grad is None:
        raise CheckFailed(
            "the logits got no gradient — compute the loss from them with differentiable "
            "tensor ops (no .detach(), .item(), .data or torch.no_grad())"
        )
    want = next_token_loss(logits_ref, tokens)
    if not abs(float(loss.detach()) - float(want.detach())) <= TOLERANCE:
        raise Unmet("same as tfs")
    torch.autograd.backward(want)
    assert logits_ref.grad is not None
    difference = max_difference(logits.grad, logits_ref.grad, "gradient of the logits")
    if not difference <= 1e-6:
        raise CheckFailed(
            f"the gradient of the logits differs from tfs's by up to {difference:.3g} "
            f"(tolerance 1e-6) — if the output is right, look for a .detach() or a "
            "hand-written backward that changes the gradient"
        )


CHECKS: list[tuple[str, Check]] = [
    ("scalar", _scalar),
    ("same as tfs", _same_as_tfs),
    ("vocabulary axis", _vocabulary_axis),
    ("shift", _shift),
    ("mean", _mean),
    ("gradient", _gradient),
]
# Confident and uniform logits mean what these probes say only under a softmax over d_vocab.
NEEDS = {"shift": ["vocabulary axis"], "mean": ["vocabulary axis"]}
CATALOGUE = Catalogue(
    correct=loss_mistakes.NextTokenLoss,
    mistakes=loss_mistakes.MISTAKES,
    probes=lambda: [({}, (_logits(seed), _tokens(seed + 1))) for seed in (0, 2)],
)


def check_loss(fn: Callable[[Tensor, Tensor], Tensor], *, learning: bool = True) -> Report:
    """Run tfs's next-token loss checks on ``fn(logits, tokens)``, called with logits
    ``[batch=3, pos=7, d_vocab=11]`` and integer tokens ``[3, 7]``.

    The checks: a float32 scalar comes back; the value equal to tfs's ``next_token_loss``
    (within 1e-5); the shift (logits at position ``p`` predict token ``p + 1``); the
    softmax over the vocabulary axis, not over positions; the mean over every predicted
    position; the gradient equal to tfs's.

    ``learning`` is accepted so that every component's check has the same signature; the
    loss has no learning check (the decoder's learns through it).
    """
    del learning
    return run_checks("loss", fn, None, CHECKS, needs=NEEDS, catalogue=CATALOGUE)
