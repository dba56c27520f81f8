"""default_corpus and load_text: the built-in text, files, folders, and the errors a user can hit.

No model here, so no tolerances: texts are compared exactly.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfs_decoder.training.corpus import default_corpus, load_text
from tfs_decoder.training.errors import DataError, TfsError


def _one_line(exc: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc.value)
    assert "\n" not in message, f"error message spans several lines: {message!r}"
    return message


def test_default_corpus_is_the_pydoc_topics_in_key_order() -> None:
    from pydoc_data.topics import topics

    text = default_corpus()
    keys = sorted(topics)
    assert text.startswith(topics[keys[0]])
    assert text.endswith(topics[keys[-1]])
    # Every topic is in it, in sorted key order, separated by one blank line.
    position = 0
    for key in keys:
        found = text.find(topics[key], position)
        assert found == position, f"topic {key!r} not where expected"
        position = found + len(topics[key]) + 2
    assert len(text) == sum(len(topics[k]) for k in keys) + 2 * (len(keys) - 1)
    assert len(text) > 100_000  # enough text to train on (~465k characters on CPython 3.11)


def test_load_text_none_is_the_default_corpus() -> None:
    assert load_text(None) == default_corpus()


def test_default_corpus_missing_pydoc_data_says_use_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail, as on a Python built without pydoc_data.
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(DataError, match=r"pydoc_data\.topics.*--data PATH") as exc:
        default_corpus()
    _one_line(exc)
    with pytest.raises(DataError, match=r"--data PATH"):
        load_text(None)


def test_load_text_reads_a_file_given_as_str_or_path(tmp_path: Path) -> None:
    text = "Hello, world.\nÜnïcödé ∑ 😀 text\n\tindented\n"
    f = tmp_path / "notes.md"  # any extension: a file given by name is read whatever its suffix
    f.write_bytes(text.encode("utf-8"))
    assert load_text(f) == text
    assert load_text(str(f)) == text


def test_load_text_normalises_newlines_and_drops_a_byte_order_mark(tmp_path: Path) -> None:
    f = tmp_path / "windows.txt"
    f.write_bytes(b"\xef\xbb\xbfline one\r\nline two\rline three\n")
    assert load_text(f) == "line one\nline two\nline three\n"


def test_load_text_folder_joins_txt_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "c.txt").write_text("third\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")  # skipped, adds no blank lines
    (tmp_path / "skip.md").write_text("not a .txt file", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "0.txt").write_text("not recursive", encoding="utf-8")
    (tmp_path / "dir.txt").mkdir()  # a folder named like a text file is not a file
    assert load_text(tmp_path) == "first\n\nsecond\n\nthird\n"


def test_load_text_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=r"no such file or folder: '.*nope\.txt'") as exc:
        load_text(missing)
    _one_line(exc)


@pytest.mark.parametrize("content", [b"", b"   \n\n\t "])
def test_load_text_empty_file_names_it(tmp_path: Path, content: bytes) -> None:
    f = tmp_path / "blank.txt"
    f.write_bytes(content)
    with pytest.raises(DataError, match=r"'.*blank\.txt' is empty") as exc:
        load_text(f)
    _one_line(exc)


def test_load_text_nul_bytes_are_binary(tmp_path: Path) -> None:
    f = tmp_path / "image.txt"
    f.write_bytes(b"GIF\x00\x01\x02 some bytes")
    with pytest.raises(DataError, match=r"'.*image\.txt' looks binary \(NUL byte at offset 3\)"):
        load_text(f)


def test_load_text_invalid_utf8_is_binary(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("café".encode("latin-1"))  # é is the lone byte 0xe9: not UTF-8
    with pytest.raises(
        DataError, match=r"'.*latin1\.txt' is not UTF-8 text \(byte 0xe9 at offset 3"
    ) as exc:
        load_text(f)
    _one_line(exc)
    # The offset counts from the start of the file, byte-order mark included.
    f.write_bytes(b"\xef\xbb\xbfab\xff")
    with pytest.raises(DataError, match=r"byte 0xff at offset 5"):
        load_text(f)


def test_load_text_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folder '.*' has no \.txt files") as exc:
        load_text(tmp_path)
    _one_line(exc)
    (tmp_path / "readme.md").write_text("text, but not .txt", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no \.txt files"):
        load_text(tmp_path)
    (tmp_path / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "b.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"every \.txt file in folder '.*' is empty \(2 files\)"):
        load_text(tmp_path)
    (tmp_path / "c.txt").write_bytes(b"\x00binary")
    with pytest.raises(DataError, match=r"'.*c\.txt' looks binary"):
        load_text(tmp_path)


def test_data_error_is_a_user_error_and_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(TfsError):
        load_text(tmp_path / "missing")
    with pytest.raises(ValueError, match="no such file"):
        load_text(tmp_path / "missing")


@settings(max_examples=25, deadline=None)
@given(
    text=st.text(
        # Surrogates (category Cs) cannot be encoded as UTF-8, so no file can hold them.
        alphabet=st.characters(exclude_characters="\r\x00\ufeff", exclude_categories=["Cs"]),
        min_size=1,
        max_size=200,
    ).filter(lambda t: t.strip() != "")
)
def test_load_text_round_trips_any_utf8_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        f = Path(folder) / "t.txt"
        f.write_bytes(text.encode("utf-8"))
        assert load_text(f) == text
        assert load_text(folder) == text
