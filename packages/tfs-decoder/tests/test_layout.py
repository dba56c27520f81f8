"""The package's two parts: the model library never imports the training application,
``import tfs_decoder`` stays light, and no source file or function grows too long to read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tfs_decoder

SOURCE = Path(tfs_decoder.__file__).parent
TRAINING = SOURCE / "training"
# The entry point of `python -m tfs_decoder`: the application's front door, never imported.
ENTRY_POINT = SOURCE / "__main__.py"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def model_files() -> list[Path]:
    return [
        path
        for path in sorted(SOURCE.rglob("*.py"))
        if TRAINING not in path.parents and path != ENTRY_POINT
    ]


def test_the_model_library_never_imports_the_training_application() -> None:
    assert len(model_files()) >= 8  # decoder, block, layernorm, config, loss, ...
    for path in model_files():
        wrong = sorted(m for m in imported_modules(path) if m.startswith("tfs_decoder.training"))
        assert not wrong, f"{path.name} imports {wrong}"


def test_importing_the_model_library_stays_light() -> None:
    heavy = ("matplotlib", "tokenizers", "safetensors", "transformers", "tfs_decoder.training")
    code = (
        "import sys, tfs_decoder\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}"
        f" or m.startswith('tfs_decoder.training')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("path", sorted(SOURCE.rglob("*.py")), ids=lambda p: p.name)
def test_files_and_functions_stay_short(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_FILE_LINES
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{node.name}: {length} lines"
