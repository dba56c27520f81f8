"""What the packages share lives once, in tfs-core: no source file is a copy of another
package's, and no package reaches into another's private modules or names."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
MIN_LINES = 5
"""Files shorter than this (empty ``__init__.py``, ``py.typed``) may coincide."""


def _sources() -> dict[Path, str]:
    """Every Python file of every package's ``src`` and ``tests``, keyed by path."""
    return {
        path: path.read_text(encoding="utf-8")
        for path in sorted(PACKAGES.glob("*/*/**/*.py"))
        if path.parts[len(PACKAGES.parts) + 1] in ("src", "tests")
    }


def _package(path: Path) -> str:
    return path.relative_to(PACKAGES).parts[0]


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """``(module, names)`` for each import: ``import a.b`` gives ``("a.b", [])``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_the_walk_sees_every_package() -> None:
    assert {_package(path) for path in _sources()} == {
        "tfs-core",
        "tfs-embeddings",
        "tfs-attention",
        "tfs-mlp",
        "tfs-decoder",
    }


def test_no_source_file_is_a_copy_of_another_packages() -> None:
    by_text: dict[str, set[str]] = defaultdict(set)
    for path, text in _sources().items():
        if len([line for line in text.splitlines() if line.strip()]) >= MIN_LINES:
            by_text[text].add(str(path.relative_to(PACKAGES)))
    copies = [
        sorted(paths)
        for paths in by_text.values()
        if len({path.split("/")[0] for path in paths}) > 1
    ]
    assert not copies, f"files copied between packages (move them to tfs-core): {copies}"


def test_no_package_imports_another_packages_private_modules_or_names() -> None:
    reaching: list[str] = []
    for path, text in _sources().items():
        own = _package(path).replace("-", "_")
        for module, names in _imports(ast.parse(text, filename=str(path))):
            top, *rest = module.split(".")
            if not top.startswith("tfs_") or top == own:
                continue
            private = [part for part in rest if part.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                where = path.relative_to(PACKAGES)
                reaching.append(f"{where}: {module} {names}")
    assert not reaching, "imports of another package's private parts:\n" + "\n".join(reaching)
