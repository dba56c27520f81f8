"""Set one version for all five packages (they are released in lockstep).

    python scripts/bump_version.py 0.2.0
    python scripts/bump_version.py 0.2.0rc1

It rewrites each package's ``version`` in ``packages/*/pyproject.toml``, the ``==`` pins
on sibling packages in their dependencies (each pins tfs-core; tfs-decoder pins the other
three too), and any
``__version__ = "..."`` in the packages' ``__init__.py``, and prints every change.
``--root`` points it at another copy of the repository (the tests use a temporary one).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]

# N.N.N with an optional pre-release: 1.2.3, 1.2.3a1, 1.2.3b2, 1.2.3rc1 (PEP 440 spellings).
VERSION = re.compile(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?")
# `version = "..."` at the start of a line; only the one in [project] is rewritten.
PROJECT_VERSION = re.compile(r'^(version\s*=\s*")([^"]*)(")', re.MULTILINE)
SIBLING_PIN = re.compile(r'(")(' + "|".join(map(re.escape, PACKAGES)) + r')==([^";\s]*)')
DUNDER_VERSION = re.compile(r'^(__version__\s*=\s*["\'])([^"\']*)(["\'])', re.MULTILINE)


class BumpError(Exception):
    """A version string or a file that the bump cannot handle."""


def validate(version: str) -> str:
    if not VERSION.fullmatch(version):
        raise BumpError(
            f"version: expected N.N.N with an optional pre-release "
            f"(for example 0.2.0 or 0.2.0rc1), got {version!r}"
        )
    return version


def _project_span(text: str, path: Path) -> tuple[int, int]:
    """Start and end of the [project] table in a pyproject.toml."""
    start = re.search(r"^\[project\]\s*$", text, re.MULTILINE)
    if start is None:
        raise BumpError(f"{path}: no [project] table")
    following = re.compile(r"^\[", re.MULTILINE).search(text, start.end())
    return start.end(), following.start() if following else len(text)


def bump_pyproject(path: Path, version: str) -> list[str]:
    """Rewrite `path` for `version`; return one line per change."""
    text = path.read_text()
    changes: list[str] = []
    start, end = _project_span(text, path)
    table = text[start:end]
    match = PROJECT_VERSION.search(table)
    if match is None:
        raise BumpError(f'{path}: no version = "..." in [project]')
    if match.group(2) != version:
        changes.append(f"{path}: version {match.group(2)} -> {version}")
    table = PROJECT_VERSION.sub(lambda m: m.group(1) + version + m.group(3), table, count=1)

    def pin(m: re.Match[str]) -> str:
        if m.group(3) != version:
            changes.append(f"{path}: {m.group(2)}=={m.group(3)} -> {m.group(2)}=={version}")
        return f"{m.group(1)}{m.group(2)}=={version}"

    table = SIBLING_PIN.sub(pin, table)
    new_text = text[:start] + table + text[end:]
    if tomllib.loads(new_text)["project"]["version"] != version:
        raise BumpError(f"{path}: version did not change to {version}")  # pragma: no cover
    if new_text != text:
        path.write_text(new_text)
    return changes


def bump_init(path: Path, version: str) -> list[str]:
    """Rewrite a `__version__ = "..."` in `path`, if there is one."""
    text = path.read_text()
    changes: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m.group(2) != version:
            changes.append(f"{path}: __version__ {m.group(2)} -> {version}")
        return m.group(1) + version + m.group(3)

    new_text = DUNDER_VERSION.sub(repl, text)
    if new_text != text:
        path.write_text(new_text)
    return changes


def bump(root: Path, version: str) -> list[str]:
    """Set every package under `root` to `version`; return one line per change."""
    validate(version)
    pyprojects = [root / "packages" / package / "pyproject.toml" for package in PACKAGES]
    missing = [str(path) for path in pyprojects if not path.is_file()]
    if missing:
        raise BumpError(f"no such file: {', '.join(missing)}")
    changes: list[str] = []
    for package, pyproject in zip(PACKAGES, pyprojects, strict=True):
        changes += bump_pyproject(pyproject, version)
        init = pyproject.parent / "src" / package.replace("-", "_") / "__init__.py"
        if init.is_file():
            changes += bump_init(init, version)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("version", help="the new version, N.N.N or N.N.N{a,b,rc}N")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the repository (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        changes = bump(args.root, args.version)
    except BumpError as error:
        print(f"bump_version: error: {error}", file=sys.stderr)
        return 2
    for line in changes:
        print(line)
    if not changes:
        print(f"bump_version: every package is already at {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
