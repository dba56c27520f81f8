"""Files that several packages each carry a copy of, because the packages install
independently, stay identical: a fix made to one copy must reach them all."""

from __future__ import annotations

from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
COPIES = {
    "_backward.py": ["tfs-attention", "tfs-mlp"],  # tfs-decoder imports tfs-attention's
    "_hook_point.py": ["tfs-attention", "tfs-mlp"],  # likewise
    "_checking.py": ["tfs-attention", "tfs-embeddings", "tfs-mlp"],  # likewise
}


def test_copies_are_identical() -> None:
    for name, packages in COPIES.items():
        texts = {
            package: (PACKAGES / package / "src" / package.replace("-", "_") / name).read_text()
            for package in packages
        }
        first = texts[packages[0]]
        different = [package for package, text in texts.items() if text != first]
        assert not different, f"{name}: {different} differ from {packages[0]}'s copy"
