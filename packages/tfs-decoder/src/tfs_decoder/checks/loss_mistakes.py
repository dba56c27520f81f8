"""Mistakes learners make in the next-token loss, each written as tfs's formula with one
step wrong: :func:`~tfs_decoder.checks.check_loss` names the one a learner's function
computes."""

from __future__ import annotations

from torch import Tensor

from tfs_core.checking import Formula


class NextTokenLoss(Formula):
    """``-mean_{b, p < pos-1} log softmax(logits[b, p])[tokens[b, p + 1]]``: position ``p``
    predicts the token after it, and the last position predicts nothing."""

    def __call__(self, *inputs: Tensor) -> Tensor:
        logits, tokens = inputs
        predicted, targets = self.pairs(logits, tokens)
        picked = self.log_probs(predicted).gather(-1, targets[..., None])[..., 0]
        return self.reduce(-picked)

    def pairs(self, logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return logits[:, :-1], tokens[:, 1:]

    def log_probs(self, logits: Tensor) -> Tensor:
        return logits.log_softmax(dim=-1)

    def reduce(self, losses: Tensor) -> Tensor:
        return losses.mean()


class NotShifted(NextTokenLoss):
    says = "the logits at position p are compared with the token at p, not p + 1"
    fix = "shift by one: logits[:, :-1] against tokens[:, 1:]"

    def pairs(self, logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return logits, tokens


class ShiftedBackwards(NextTokenLoss):
    says = "the shift goes the wrong way: position p is asked for token p - 1"
    fix = "logits[:, :-1] against tokens[:, 1:]"

    def pairs(self, logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        return logits[:, 1:], tokens[:, :-1]


class SoftmaxOverPositions(NextTokenLoss):
    says = "the softmax is taken over positions (dim=1), not over the vocabulary"
    fix = "log_softmax over the last axis, d_vocab (dim=-1)"

    def log_probs(self, logits: Tensor) -> Tensor:
        return logits.log_softmax(dim=1)


class Summed(NextTokenLoss):
    says = "the per-prediction losses are summed, not averaged"
    fix = "take their mean over batch and pos - 1 (.mean())"

    def reduce(self, losses: Tensor) -> Tensor:
        return losses.sum()


class NoLog(NextTokenLoss):
    says = "the loss is minus the probability, not minus its log"
    fix = "-log softmax(logits)[next token]: log_softmax, or cross_entropy on the logits"

    def log_probs(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1)


class SoftmaxTwice(NextTokenLoss):
    says = "the logits go through a softmax before the loss's own, which applies a second one"
    fix = "give cross-entropy (or log_softmax) the raw logits"

    def log_probs(self, logits: Tensor) -> Tensor:
        return logits.softmax(dim=-1).log_softmax(dim=-1)


class SignFlipped(NextTokenLoss):
    says = "the loss is the mean log-probability, without the minus sign"
    fix = "-mean(log p): minimising it raises the probability of the next token"

    def reduce(self, losses: Tensor) -> Tensor:
        return -losses.mean()


MISTAKES: list[type[NextTokenLoss]] = [
    NotShifted,
    ShiftedBackwards,
    SoftmaxOverPositions,
    Summed,
    NoLog,
    SoftmaxTwice,
    SignFlipped,
]
