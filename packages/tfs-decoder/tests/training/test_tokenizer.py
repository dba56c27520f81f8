"""CharTokenizer, BPETokenizer and WordTokenizer: round trips, serialisation through JSON,
and errors.

The BPE tokenizer is checked for what byte-level BPE promises whatever merges it learned:
``decode(encode(text)) == text`` for any Unicode text, ids inside the vocabulary, and fewer
tokens than bytes on text like its training text.

The word tokenizer is checked against ``re.split(r"\b", text)`` itself (the split of Hilton's
chapter 1), and for its cap, its unknown token and a vocabulary that depends only on the text.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfs_decoder import Decoder, DecoderConfig
from tfs_decoder.training.checkpoint import save_checkpoint
from tfs_decoder.training.corpus import default_corpus
from tfs_decoder.training.errors import TfsError
from tfs_decoder.training.load import load_model
from tfs_decoder.training.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    split_words,
    tail_chars,
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


# ----- WordTokenizer -----

_WORD_TEXTS = [
    "Hello, world!",
    "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind\n\n",
    "It's 2024; we've 3.14 apples & 42 pears -- don't we?",
    "  leading and trailing spaces  ",
    "snake_case x2 ÜBER café naïve 中文",
    "...!?",
]


@pytest.mark.parametrize("text", _WORD_TEXTS)
def test_word_split_is_re_split_at_word_boundaries_without_empties(text: str) -> None:
    expected = [piece for piece in re.split(r"\b", text) if piece]
    assert split_words(text) == expected
    assert "".join(split_words(text)) == text
    tok = WordTokenizer.fit(text, vocab_size=1000)
    ids = tok.encode(text)
    assert len(ids) == len(expected)
    assert [tok.decode([i]) for i in ids] == expected
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids


def test_word_split_examples() -> None:
    assert split_words("don't stop") == ["don", "'", "t", " ", "stop"]
    assert split_words("3.14\n") == ["3", ".", "14", "\n"]
    assert split_words("") == []
    assert split_words("!?") == ["!?"]


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=200))
def test_word_round_trips_any_text_it_was_fitted_on(text: str) -> None:
    assert split_words(text) == [p for p in re.split(r"\b", text) if p]
    if text:
        tok = WordTokenizer.fit(text, vocab_size=10_000)
        assert tok.decode(tok.encode(text)) == text


def test_word_cap_keeps_the_most_frequent_and_maps_the_rest_to_unk() -> None:
    text = "a b a c a b d"  # pieces: 'a' x3, ' ' x6, 'b' x2, 'c' x1, 'd' x1
    tok = WordTokenizer.fit(text, vocab_size=4)
    assert tok.vocab_size == 4
    assert tok.pieces == [" ", "a", "b"]
    assert tok.unk_id == 3
    assert tok.encode("a c d b") == [1, 0, 3, 0, 3, 0, 2]
    assert tok.decode(tok.encode("a c d b")) == "a <unk> <unk> b"
    assert tok.decode([tok.unk_id]) == WordTokenizer.UNK == "<unk>"
    # Pieces never seen at all are unknown too; "<unk>" itself is three pieces.
    assert tok.encode("zebra") == [3]
    assert tok.encode("<unk>") == [3, 3, 3]


def test_word_ties_are_broken_by_first_appearance() -> None:
    # 'c', 'b', 'a' each once, in this order; ' ' twice comes first.
    assert WordTokenizer.fit("c b a", vocab_size=3).pieces == [" ", "c"]
    assert WordTokenizer.fit("a b c", vocab_size=3).pieces == [" ", "a"]


def test_word_vocab_is_smaller_when_the_text_has_fewer_pieces() -> None:
    tok = WordTokenizer.fit("ha ha ha", vocab_size=2000)
    assert tok.pieces == ["ha", " "]
    assert tok.vocab_size == 3


def test_word_fit_is_deterministic() -> None:
    a = WordTokenizer.fit(_TRAIN, vocab_size=12)
    b = WordTokenizer.fit(_TRAIN, vocab_size=12)
    assert a.to_dict() == b.to_dict()
    assert a.vocab_size == 12
    assert WordTokenizer.fit(_TRAIN, vocab_size=20).pieces[:11] == a.pieces


def test_word_default_corpus_covers_most_pieces() -> None:
    text = default_corpus()
    tok = WordTokenizer.fit(text)  # the --word-vocab-size default
    assert tok.vocab_size == 2000
    ids = tok.encode(text)
    assert ids.count(tok.unk_id) / len(ids) < 0.1


def test_word_to_dict_round_trips_through_json() -> None:
    tok = WordTokenizer.fit(_TRAIN, vocab_size=15)
    d = _json_round_trip(tok.to_dict())
    assert d == {"kind": "word", "pieces": tok.pieces}
    again = tokenizer_from_dict(d)
    assert isinstance(again, WordTokenizer)
    assert isinstance(again, Tokenizer)
    assert again.pieces == tok.pieces
    text = "The lazy fox returns x. Ünïcödé too."
    assert again.encode(text) == tok.encode(text)
    assert again.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_word_tokenizer_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    tok = WordTokenizer.fit(_TRAIN, vocab_size=15)
    config = DecoderConfig(
        d_vocab=tok.vocab_size, d_model=8, n_heads=2, d_head=4, d_mlp=16, n_layers=1, n_ctx=8
    )
    save_checkpoint(tmp_path, step=0, model=Decoder(config), model_config=config,
                    train_config={}, tokenizer=tok.to_dict(), state={})  # fmt: skip
    _, saved, checkpoint = load_model(tmp_path)
    again = tokenizer_from_dict(saved)
    assert isinstance(again, WordTokenizer)
    assert again.pieces == tok.pieces
    assert checkpoint.model_config.d_vocab == again.vocab_size == 15


def test_tail_chars_counts_the_text_an_unk_stands_for() -> None:
    text = "a b a c a bb"
    tok = WordTokenizer.fit(text, vocab_size=3)  # ' ', 'a', <unk>
    ids = tok.encode(text)
    assert tok.decode(ids[-3:]) == "a <unk>"
    assert tail_chars(tok, text, ids[-3:]) == len("a bb")
    assert tail_chars(tok, text, ids) == len(text)
    assert tail_chars(tok, text, []) == 0
    char = CharTokenizer.fit(text)
    assert tail_chars(char, text, char.encode(text)[-4:]) == 4


def test_word_errors() -> None:
    with pytest.raises(ValueError, match=r"vocab_size: expected an int >= 2 .*, got 1"):
        WordTokenizer.fit(_TRAIN, vocab_size=1)
    with pytest.raises(ValueError, match=r"text: expected some text"):
        WordTokenizer.fit("")
    with pytest.raises(ValueError, match=r"pieces: expected at least one piece"):
        WordTokenizer([])
    with pytest.raises(ValueError, match=r"pieces: expected pieces .*, got ''"):
        WordTokenizer(["a", ""])
    with pytest.raises(ValueError, match=r"pieces: expected pieces .*, got '<unk>'"):
        WordTokenizer(["<unk>"])
    tok = WordTokenizer.fit("a b", vocab_size=3)  # 'a', ' ' and <unk>
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, vocab_size=3\), got 3"):
        tok.decode([0, 3])


# ----- tokenizer_from_dict -----


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({}, r"expected kind 'char', 'bpe' or 'word', got None"),
        ({"kind": "words"}, r"expected kind 'char', 'bpe' or 'word', got 'words'"),
        ({"kind": "char"}, r"expected a non-empty list 'chars' for kind 'char', got None"),
        ({"kind": "char", "chars": []}, r"expected a non-empty list 'chars'"),
        ({"kind": "char", "chars": ["a", "a"]}, r"tokenizer: chars: expected distinct characters"),
        ({"kind": "bpe"}, r"expected a JSON string 'tokenizer' for kind 'bpe', got NoneType"),
        ({"kind": "bpe", "tokenizer": "{not json"}, r"corrupt BPE tokenizer JSON"),
        (
            {"kind": "word"},
            r"expected a non-empty list of strings 'pieces' for kind 'word', got None",
        ),
        ({"kind": "word", "pieces": []}, r"expected a non-empty list of strings 'pieces'"),
        ({"kind": "word", "pieces": ["a", "a"]}, r"tokenizer: pieces: expected distinct pieces"),
        ({"kind": "word", "pieces": ["a b"]}, r"tokenizer: pieces: expected pieces of re.split"),
        ({"kind": "word", "pieces": ["a", 7]}, r"expected a non-empty list of strings 'pieces'"),
    ],
)
def test_tokenizer_from_dict_rejects_bad_descriptions(d: dict[str, Any], message: str) -> None:
    with pytest.raises(TfsError, match=message) as exc:
        tokenizer_from_dict(d)
    assert "\n" not in str(exc.value)
