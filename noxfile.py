"""Sessions: tests-<package>, typecheck-<package> (one virtualenv each), tests-examples and
typecheck-examples (the examples/ folder, all four packages installed), tests, typecheck, lint,
train (the no-argument main job), and bench (the speed benchmark; never run by default).

Each package is tested in a virtualenv that holds only that package, its declared
dependencies (siblings installed from this checkout) and its dependency groups, so a
missing dependency in one package's metadata fails that package's session.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
PACKAGES = ["tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]
# Sibling packages each one depends on; installed from the checkout, never from an index.
SIBLINGS = {
    "tfs-embeddings": [],
    "tfs-attention": [],
    "tfs-mlp": [],
    "tfs-decoder": ["tfs-embeddings", "tfs-attention", "tfs-mlp"],
}

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "typecheck", "lint"]

# Pin torch and the tools for every install; uv reads UV_CONSTRAINT, pip PIP_CONSTRAINT.
os.environ["UV_CONSTRAINT"] = str(CONSTRAINTS)
os.environ["PIP_CONSTRAINT"] = str(CONSTRAINTS)
# uv does not read pip's find-links, where the CPU build of torch lies on our machines.
if "PIP_FIND_LINKS" in os.environ and "UV_FIND_LINKS" not in os.environ:
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
# With bytecode writing off, a fresh venv recompiles torch on every import (~10 s).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _install(session: nox.Session, package: str, *groups: str) -> None:
    """Install `package` and its siblings from the checkout, plus its dependency groups."""
    pyproject = nox.project.load_toml(ROOT / "packages" / package / "pyproject.toml")
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(pyproject, group)
    ]
    paths = [str(ROOT / "packages" / name) for name in [*SIBLINGS[package], package]]
    session.install(*paths, *requirements)


def _define(
    kind: str, groups: tuple[str, ...], command: list[str], examples_command: list[str]
) -> None:
    for package in PACKAGES:

        @nox.session(name=f"{kind}-{package}")
        def run(session: nox.Session, package: str = package) -> None:
            _install(session, package, *groups)
            where = f"packages/{package}"
            session.run(*[arg.format(where=where) for arg in command], *session.posargs)

    @nox.session(name=f"{kind}-examples")
    def examples(session: nox.Session) -> None:
        # tfs-decoder brings its three siblings: the examples use all four packages.
        _install(session, "tfs-decoder", *groups)
        session.run(*examples_command, *session.posargs)

    @nox.session(name=kind, venv_backend="none")
    def umbrella(session: nox.Session) -> None:
        for name in [*PACKAGES, "examples"]:
            session.notify(f"{kind}-{name}")


_define("tests", ("test",), ["pytest", "{where}/tests"], ["pytest", "examples"])
_define("typecheck", ("typecheck",), ["mypy", "{where}/src", "{where}/tests"], ["mypy", "examples"])


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def train(session: nox.Session) -> None:
    """The main job as a newcomer runs it: `tfs train` with no arguments, in a fresh venv."""
    _install(session, "tfs-decoder")
    session.run("tfs", "train", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """benchmarks/bench.py: tfs, a reference decoder and transformers' GPT-2 timed side by
    side (see benchmarks/README.md). Arguments after `--` go to the script, for example
    `nox -s bench -- --shape cpu-small --quick`."""
    _install(session, "tfs-decoder")
    session.install("transformers")  # the version pinned in constraints.txt
    session.run("python", "benchmarks/bench.py", *session.posargs)
