"""Tokenizers that turn training text into ids and back: characters, or byte-level BPE.

- :class:`CharTokenizer`: one id per distinct character of the training text, ids in sorted
  character order. Small vocabulary (103 for the default corpus on CPython 3.11), no training.
- :class:`BPETokenizer`: byte-level byte-pair encoding (Sennrich et al. 2016, "Neural Machine
  Translation of Rare Words with Subword Units"; the byte-level variant of GPT-2, Radford et al.
  2019, section 2.2) trained on the corpus with the ``tokenizers`` package, an optional extra:
  ``pip install "tfs-decoder[bpe]"``. Its 256 base tokens are the bytes, so every text encodes.
- :class:`WordTokenizer`: the pieces of ``re.split(r"\\b", text)`` (runs of word characters and
  the runs between them, as in Hilton's "transformer from scratch", chapter 1), the most
  frequent ones up to a vocabulary size, and one unknown token for every other piece.

All are saved with a checkpoint through ``to_dict()`` (plain JSON) and rebuilt by
:func:`tokenizer_from_dict`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from tfs_decoder.training.errors import TfsError

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "split_words",
    "tail_chars",
    "tokenizer_from_dict",
]

_BPE_INSTALL = 'pip install "tfs-decoder[bpe]"'

_F = TypeVar("_F")


def no_type_check(func: _F) -> _F:
    """Identity decorator that keeps a function out of the tests' runtime type checking.

    jaxtyping's import hook (installed by the tests' conftest) skips any function decorated with
    a name ``no_type_check``. Used on ``encode``/``decode`` and their helper: their arguments are
    plain ``str``/``list[int]``, which typeguard checks one item at a time (measured ~25 us per
    token: 25 s for the default corpus), while there are no tensor shapes to check. Unlike
    ``typing.no_type_check`` this one leaves mypy's static checking on.
    """
    return func


@runtime_checkable
class Tokenizer(Protocol):
    """What training, sampling and checkpoints need from a tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of ids: every id is in ``[0, vocab_size)``."""
        ...

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description with a ``"kind"``; see :func:`tokenizer_from_dict`."""
        ...


@no_type_check
def _validate_ids(ids: Sequence[int], vocab_size: int) -> None:
    if len(ids) and (min(ids) < 0 or max(ids) >= vocab_size):
        bad = next(i for i in ids if not 0 <= i < vocab_size)
        raise ValueError(f"ids: expected ids in [0, vocab_size={vocab_size}), got {bad}")


class CharTokenizer:
    """Each character is a token: ``encode(text)[i] = chars.index(text[i])``.

    ``decode(encode(text)) == text`` for every text made of the vocabulary's characters.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        """``chars``: the vocabulary, one distinct single character per id, in id order."""
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars: expected single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            dup = next(c for c in chars if chars.count(c) > 1)
            raise ValueError(f"chars: expected distinct characters, got {dup!r} more than once")
        if not chars:
            raise ValueError("chars: expected at least one character, got none")
        self._itos = chars
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        """The tokenizer whose vocabulary is the sorted set of characters in ``text``."""
        if not text:
            raise ValueError("text: expected at least one character to build a vocabulary, got ''")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self._itos)

    @property
    def chars(self) -> list[str]:
        """The vocabulary in id order (a copy)."""
        return list(self._itos)

    @no_type_check
    def encode(self, text: str) -> list[int]:
        """One id per character of ``text``.

        Raises:
            TfsError: a character of ``text`` is not in the vocabulary (the message names it).
        """
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            i, c = next((i, c) for i, c in enumerate(text) if c not in stoi)
            raise TfsError(
                f"text: character {c!r} (U+{ord(c):04X}) at index {i} is not in the character "
                f"tokenizer's vocabulary of {self.vocab_size} characters"
            ) from None

    @no_type_check
    def decode(self, ids: Sequence[int]) -> str:
        """The characters of ``ids`` joined; ids must be in ``[0, vocab_size)``."""
        _validate_ids(ids, self.vocab_size)
        itos = self._itos
        return "".join([itos[i] for i in ids])

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "char", "chars": [...]}``: the vocabulary in id order."""
        return {"kind": "char", "chars": list(self._itos)}

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _import_tokenizers() -> Any:
    """The ``tokenizers`` module, or a TfsError saying how to install it."""
    try:
        import tokenizers
    except ImportError as exc:
        raise TfsError(
            f"the BPE tokenizer needs the 'tokenizers' package, which is not installed: "
            f"{_BPE_INSTALL}"
        ) from exc
    return tokenizers


class BPETokenizer:
    """Byte-level BPE: text -> UTF-8 bytes -> merged byte sequences learned from the corpus.

    Pre-tokenization splits the text GPT-2's way (words, numbers, punctuation, whitespace runs);
    each piece's bytes start as 256 base tokens and the learned merges join frequent adjacent pairs.
    No normalization and no prefix space, so ``decode(encode(text)) == text`` for every text.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer) -> None:
        """Wrap a trained ``tokenizers.Tokenizer``, as made by :meth:`fit`."""
        self._tok = tokenizer

    @classmethod
    def fit(cls, text: str, vocab_size: int = 1024) -> BPETokenizer:
        """Train on ``text`` (in memory) up to ``vocab_size`` tokens: 256 bytes plus merges.

        The result has fewer tokens than ``vocab_size`` when the text has fewer distinct pairs
        to merge; :attr:`vocab_size` reports the real number.

        Raises:
            TfsError: ``tokenizers`` is not installed.
            ValueError: ``vocab_size`` < 256 or ``text`` is empty.
        """
        if vocab_size < 256:
            raise ValueError(
                f"vocab_size: expected at least 256 (one token per byte), got {vocab_size}"
            )
        if not text:
            raise ValueError("text: expected some text to train the BPE tokenizer on, got ''")
        tk = _import_tokenizers()
        byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = byte_level
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator([text], trainer=trainer, length=1)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        """Number of tokens: 256 bytes plus the learned merges."""
        return int(self._tok.get_vocab_size())

    @no_type_check
    def encode(self, text: str) -> list[int]:
        """The BPE ids of ``text``."""
        return list(self._tok.encode(text).ids)

    @no_type_check
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; ids must be in ``[0, vocab_size)``.

        A slice of ids that cuts a multi-byte character decodes that character to U+FFFD.
        """
        _validate_ids(ids, self.vocab_size)
        return str(self._tok.decode(list(ids), skip_special_tokens=False))

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "bpe", "tokenizer": <the tokenizers JSON string>}``."""
        return {"kind": "bpe", "tokenizer": self._tok.to_str()}

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"


_WORD_BOUNDARY = re.compile(r"\b")


@no_type_check
def split_words(text: str) -> list[str]:
    """``re.split(r"\\b", text)`` without its empty strings: word-character runs and the runs
    between them, so ``"".join(split_words(text)) == text``."""
    return [piece for piece in _WORD_BOUNDARY.split(text) if piece]


class WordTokenizer:
    """Each piece of :func:`split_words` is a token: ``pieces[i]`` has id ``i``, and every
    piece outside ``pieces`` has the unknown id ``len(pieces)``, decoded as :attr:`UNK`.

    ``decode(encode(text)) == text`` for every text whose pieces are all in the vocabulary.
    """

    UNK = "<unk>"  # splits into '<', 'unk', '>', so it is never one piece of a text itself

    def __init__(self, pieces: Sequence[str]) -> None:
        """``pieces``: the known pieces, distinct, in id order; the unknown token comes after."""
        pieces = list(pieces)
        for p in pieces:
            if not isinstance(p, str) or split_words(p) != [p]:
                raise ValueError(
                    f"pieces: expected pieces of re.split(r'\\b', text) (non-empty, no word "
                    f"boundary inside), got {p!r:.60}"
                )
        if len(set(pieces)) != len(pieces):
            dup = next(p for p in pieces if pieces.count(p) > 1)
            raise ValueError(f"pieces: expected distinct pieces, got {dup!r:.60} more than once")
        if not pieces:
            raise ValueError("pieces: expected at least one piece, got none")
        self._itos = pieces
        self._stoi = {p: i for i, p in enumerate(pieces)}
        self._decoded = [*pieces, self.UNK]  # id -> text, the unknown id included

    @classmethod
    def fit(cls, text: str, vocab_size: int = 2000) -> WordTokenizer:
        """The ``vocab_size - 1`` most frequent pieces of ``text`` (ties: first appearance
        first), most frequent first, plus the unknown token.

        The result has fewer tokens than ``vocab_size`` when the text has fewer distinct
        pieces; :attr:`vocab_size` reports the real number.

        Raises:
            ValueError: ``vocab_size`` < 2 or ``text`` is empty.
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(
                f"vocab_size: expected an int >= 2 (one piece and the unknown token), "
                f"got {vocab_size!r}"
            )
        if not text:
            raise ValueError("text: expected some text to build a word vocabulary, got ''")
        counts = Counter(split_words(text))  # keys in order of first appearance
        # sorted() is stable, so equal counts keep their first-appearance order.
        ranked = sorted(counts, key=lambda piece: -counts[piece])
        return cls(ranked[: vocab_size - 1])

    @property
    def vocab_size(self) -> int:
        """Number of ids: the known pieces and the unknown token."""
        return len(self._itos) + 1

    @property
    def unk_id(self) -> int:
        """The id every piece outside the vocabulary gets: the last one."""
        return len(self._itos)

    @property
    def pieces(self) -> list[str]:
        """The known pieces in id order (a copy), without the unknown token."""
        return list(self._itos)

    @no_type_check
    def encode(self, text: str) -> list[int]:
        """One id per piece of :func:`split_words`; unknown pieces get :attr:`unk_id`."""
        stoi, unk = self._stoi, len(self._itos)
        return [stoi.get(piece, unk) for piece in split_words(text)]

    @no_type_check
    def decode(self, ids: Sequence[int]) -> str:
        """The pieces of ``ids`` joined, :attr:`UNK` for the unknown id; ids must be in
        ``[0, vocab_size)``."""
        _validate_ids(ids, self.vocab_size)
        decoded = self._decoded
        return "".join([decoded[i] for i in ids])

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "word", "pieces": [...]}``: the known pieces in id order."""
        return {"kind": "word", "pieces": list(self._itos)}

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


@no_type_check
def tail_chars(tokenizer: Tokenizer, text: str, tail: Sequence[int]) -> int:
    """The number of characters of ``text`` that its last ``len(tail)`` tokens, ``tail``,
    stand for: the denominator of bits per character.

    That is the length of ``decode(tail)``, except for a :class:`WordTokenizer`, whose
    ``<unk>`` is not as long as the pieces it replaced: there the pieces of ``text`` count.
    """
    if isinstance(tokenizer, WordTokenizer):
        pieces = split_words(text)
        return sum(len(piece) for piece in pieces[max(len(pieces) - len(tail), 0) :])
    return len(tokenizer.decode(tail))


def tokenizer_from_dict(d: Mapping[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer that ``to_dict()`` described.

    Raises:
        TfsError: the dict is not a tokenizer description (unknown or missing ``"kind"``,
            missing fields, a corrupt BPE JSON), or ``tokenizers`` is missing for a BPE one.
    """
    kind = d.get("kind") if isinstance(d, Mapping) else None
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, list) or not chars:
            raise TfsError(
                f"tokenizer: expected a non-empty list 'chars' for kind 'char', got {chars!r:.60}"
            )
        try:
            return CharTokenizer(chars)
        except ValueError as exc:
            raise TfsError(f"tokenizer: {exc}") from None
    if kind == "bpe":
        spec = d.get("tokenizer")
        if not isinstance(spec, str):
            raise TfsError(
                f"tokenizer: expected a JSON string 'tokenizer' for kind 'bpe', got "
                f"{type(spec).__name__}"
            )
        tk = _import_tokenizers()
        try:
            tok = tk.Tokenizer.from_str(spec)
        except Exception as exc:  # tokenizers raises a bare Exception for malformed JSON
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TfsError(f"tokenizer: corrupt BPE tokenizer JSON: {first_line}") from None
        return BPETokenizer(tok)
    if kind == "word":
        pieces = d.get("pieces")
        if not (isinstance(pieces, list) and pieces and all(isinstance(p, str) for p in pieces)):
            raise TfsError(
                f"tokenizer: expected a non-empty list of strings 'pieces' for kind 'word', "
                f"got {pieces!r:.60}"
            )
        try:
            return WordTokenizer(pieces)
        except ValueError as exc:
            raise TfsError(f"tokenizer: {exc}") from None
    raise TfsError(f"tokenizer: expected kind 'char', 'bpe' or 'word', got {kind!r}")
