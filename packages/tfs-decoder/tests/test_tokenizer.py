"""CharTokenizer and BPETokenizer: round trips, serialisation through JSON, and errors.

The BPE tokenizer is checked for what byte-level BPE promises whatever merges it learned:
``decode(encode(text)) == text`` for any Unicode text, ids inside the vocabulary, and fewer
tokens than bytes on text like its training text.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfs_decoder.training.corpus import default_corpus
from tfs_decoder.training.errors import TfsError
from tfs_decoder.training.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    tokenizer_from_dict,
)

_TRAIN = (
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away.\n"
    "def forward(self, x):\n    return self.linear(x) + x\n"
) * 20


def _json_round_trip(d: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    assert isinstance(out, dict)
    return out


# ----- CharTokenizer -----


def test_char_fit_vocab_is_the_sorted_set_of_characters() -> None:
    tok = CharTokenizer.fit("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]
    assert tok.decode([7, 5, 6, 4, 1]) == "world"
    assert tok.encode("") == []
    assert tok.decode([]) == ""
    assert isinstance(tok, Tokenizer)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), vocab=st.text(min_size=1, max_size=40))
def test_char_round_trips_any_text_from_its_vocabulary(data: st.DataObject, vocab: str) -> None:
    tok = CharTokenizer.fit(vocab)
    assert tok.vocab_size == len(set(vocab))
    text = data.draw(st.text(alphabet=sorted(set(vocab)), max_size=100))
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_char_default_corpus_round_trips() -> None:
    text = default_corpus()
    tok = CharTokenizer.fit(text)
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text


def test_char_unknown_character_names_it() -> None:
    tok = CharTokenizer.fit("abc")
    with pytest.raises(TfsError, match=r"character 'z' \(U\+007A\) at index 2 is not in") as exc:
        tok.encode("abzc")
    assert "\n" not in str(exc.value)
    with pytest.raises(TfsError, match=r"'😀' \(U\+1F600\) at index 0"):
        tok.encode("😀")


def test_char_decode_out_of_range_id() -> None:
    tok = CharTokenizer.fit("abc")
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, vocab_size=3\), got 3"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match=r"got -1"):
        tok.decode([-1])


def test_char_constructor_checks_the_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"chars: expected single characters, got 'ab'"):
        CharTokenizer(["a", "ab"])
    with pytest.raises(ValueError, match=r"chars: expected distinct characters, got 'a'"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match=r"chars: expected at least one character"):
        CharTokenizer([])
    with pytest.raises(ValueError, match=r"text: expected at least one character"):
        CharTokenizer.fit("")


def test_char_to_dict_round_trips_through_json() -> None:
    text = "Zürich, 2024: ∑ x² — done.\n"
    tok = CharTokenizer.fit(text)
    d = _json_round_trip(tok.to_dict())
    assert d["kind"] == "char"
    again = tokenizer_from_dict(d)
    assert isinstance(again, CharTokenizer)
    assert again.chars == tok.chars
    assert again.encode(text) == tok.encode(text)
    # A non-sorted vocabulary keeps its id order.
    shuffled = CharTokenizer(["q", "a", "m"])
    assert tokenizer_from_dict(_json_round_trip(shuffled.to_dict())).encode("maq") == [2, 1, 0]


def test_char_to_dict_does_not_share_state() -> None:
    tok = CharTokenizer.fit("abc")
    d = tok.to_dict()
    d["chars"].append("z")
    assert tok.vocab_size == 3
    tok.chars.append("y")
    assert tok.vocab_size == 3


# ----- BPETokenizer -----


def test_bpe_fit_learns_merges_up_to_vocab_size() -> None:
    tok = BPETokenizer.fit(_TRAIN, vocab_size=300)
    assert 256 < tok.vocab_size <= 300
    assert isinstance(tok, Tokenizer)
    ids = tok.encode(_TRAIN)
    assert all(0 <= i < tok.vocab_size for i in ids)
    # Merges make the training text shorter than one token per byte.
    assert len(ids) < 0.6 * len(_TRAIN.encode("utf-8"))
    assert tok.decode(ids) == _TRAIN


def test_bpe_fit_on_default_corpus_reaches_the_requested_size() -> None:
    text = default_corpus()
    tok = BPETokenizer.fit(text, vocab_size=512)
    assert tok.vocab_size == 512
    ids = tok.encode(text)
    assert len(ids) < len(text) / 2
    assert tok.decode(ids) == text


@settings(max_examples=30, deadline=None)
@given(text=st.text(max_size=200))
def test_bpe_round_trips_any_unicode_text(text: str) -> None:
    # Characters the training text never had still encode: every byte is a base token.
    tok = BPETokenizer.fit(_TRAIN, vocab_size=300)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_bpe_round_trips_awkward_text() -> None:
    tok = BPETokenizer.fit(_TRAIN, vocab_size=300)
    for text in [
        "",
        " ",
        "  leading spaces",
        "trailing  \n\n",
        "\x00\x01\t\r\n",
        "ß😀中文 e\u0301",
    ]:
        assert tok.decode(tok.encode(text)) == text


def test_bpe_fit_is_deterministic() -> None:
    a = BPETokenizer.fit(_TRAIN, vocab_size=300)
    b = BPETokenizer.fit(_TRAIN, vocab_size=300)
    assert a.to_dict() == b.to_dict()


def test_bpe_to_dict_round_trips_through_json() -> None:
    tok = BPETokenizer.fit(_TRAIN, vocab_size=300)
    d = _json_round_trip(tok.to_dict())
    assert d["kind"] == "bpe"
    assert isinstance(d["tokenizer"], str)
    json.loads(d["tokenizer"])  # the embedded tokenizers JSON is itself valid JSON
    again = tokenizer_from_dict(d)
    assert isinstance(again, BPETokenizer)
    assert again.vocab_size == tok.vocab_size
    text = "The lazy fox returns x. Ünïcödé too."
    assert again.encode(text) == tok.encode(text)
    assert again.decode(tok.encode(text)) == text


def test_bpe_errors() -> None:
    with pytest.raises(ValueError, match=r"vocab_size: expected at least 256 .*, got 255"):
        BPETokenizer.fit(_TRAIN, vocab_size=255)
    with pytest.raises(ValueError, match=r"text: expected some text"):
        BPETokenizer.fit("", vocab_size=300)
    tok = BPETokenizer.fit(_TRAIN, vocab_size=300)
    with pytest.raises(ValueError, match=rf"ids: expected ids in \[0, vocab_size={tok.vocab_size}"):
        tok.decode([tok.vocab_size])


def test_bpe_without_tokenizers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    d = BPETokenizer.fit(_TRAIN, vocab_size=300).to_dict()
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import tokenizers now fails
    with pytest.raises(TfsError, match=r"needs the 'tokenizers' package.*tfs-decoder\[bpe\]") as e:
        BPETokenizer.fit(_TRAIN, vocab_size=300)
    assert "\n" not in str(e.value)
    with pytest.raises(TfsError, match=r"pip install \"tfs-decoder\[bpe\]\""):
        tokenizer_from_dict(d)
    # The character tokenizer does not need it.
    assert tokenizer_from_dict(CharTokenizer.fit("ab").to_dict()).vocab_size == 2


# ----- tokenizer_from_dict -----


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({}, r"expected kind 'char' or 'bpe', got None"),
        ({"kind": "word"}, r"expected kind 'char' or 'bpe', got 'word'"),
        ({"kind": "char"}, r"expected a non-empty list 'chars' for kind 'char', got None"),
        ({"kind": "char", "chars": []}, r"expected a non-empty list 'chars'"),
        ({"kind": "char", "chars": ["a", "a"]}, r"tokenizer: chars: expected distinct characters"),
        ({"kind": "bpe"}, r"expected a JSON string 'tokenizer' for kind 'bpe', got NoneType"),
        ({"kind": "bpe", "tokenizer": "{not json"}, r"corrupt BPE tokenizer JSON"),
    ],
)
def test_tokenizer_from_dict_rejects_bad_descriptions(d: dict[str, Any], message: str) -> None:
    with pytest.raises(TfsError, match=message) as exc:
        tokenizer_from_dict(d)
    assert "\n" not in str(exc.value)
