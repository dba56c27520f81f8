"""Training text: the built-in default corpus, or UTF-8 text from a file or a folder of .txt files.

The default corpus is the English text of the Python Language Reference topics that ship with
CPython (``pydoc_data.topics``, what ``help("if")`` shows): about 465k characters of technical
prose and code, present in every standard CPython install, so ``tfs train`` needs no download.

Every failure a user can fix (missing path, empty or binary file, empty folder) raises
:class:`~tfs_decoder.training.errors.DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfs_decoder.training.errors import DataError

__all__ = ["default_corpus", "load_text"]

# Separates topics of the default corpus and files of a folder: a blank line, like paragraphs.
_JOIN = "\n\n"


def default_corpus() -> str:
    """The text of ``pydoc_data.topics``: every topic, in sorted key order, joined by a blank line.

    Raises:
        DataError: this Python was built without ``pydoc_data`` (some slim distributions drop it).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise DataError(
            "default corpus: this Python has no pydoc_data.topics module; "
            "pass --data PATH to train on a text file or a folder of .txt files"
        ) from exc
    text = _JOIN.join(topics[key] for key in sorted(topics))
    if not text.strip():
        raise DataError(
            "default corpus: pydoc_data.topics is empty in this Python; "
            "pass --data PATH to train on a text file or a folder of .txt files"
        )
    return text


def load_text(path: str | os.PathLike[str] | None) -> str:
    """The training text at ``path``.

    ``None`` -> :func:`default_corpus`; a file -> its text; a folder -> the text of its ``*.txt``
    files (not recursive) in name order, joined by a blank line.

    Files must be UTF-8 (a leading byte-order mark is dropped); line endings ``\\r\\n`` and
    ``\\r`` become ``\\n``, as Python's text mode does. Empty files inside a folder are skipped.

    Raises:
        DataError: the path does not exist or cannot be read, a file holds NUL bytes or bytes that
            are not UTF-8 (binary content), a folder has no ``.txt`` files, or the text is empty
            (only whitespace counts as empty).
    """
    if path is None:
        return default_corpus()
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.glob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"--data: folder {str(p)!r} has no .txt files")
        texts = [_read_file(f) for f in files]
        text = _JOIN.join(t for t in texts if t.strip())
        if not text:
            raise DataError(
                f"--data: every .txt file in folder {str(p)!r} is empty ({len(files)} files)"
            )
        return text
    if not p.exists():
        raise DataError(f"--data: no such file or folder: {str(p)!r}")
    text = _read_file(p)
    if not text.strip():
        raise DataError(f"--data: file {str(p)!r} is empty; expected some text to train on")
    return text


def _read_file(path: Path) -> str:
    """The UTF-8 text of one file, or a DataError naming it when it is unreadable or binary."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"--data: cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise DataError(
            f"--data: file {str(path)!r} looks binary (NUL byte at offset {nul}); "
            "expected UTF-8 text"
        )
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a UTF-8 byte-order mark
    try:
        text = raw[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start  # counted from the start of the file
        raise DataError(
            f"--data: file {str(path)!r} is not UTF-8 text (byte 0x{raw[offset]:02x} at "
            f"offset {offset} cannot be decoded); expected UTF-8 text"
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")
