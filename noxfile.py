"""Sessions: tests-<package>, typecheck-<package> (one virtualenv each), tests-examples and
typecheck-examples (the examples/ folder, all five packages installed), tests-scripts and
typecheck-scripts (the release scripts), tests, typecheck, lint, docs (the documentation
site, built strictly), train (the no-argument
main job), bench (the speed benchmark), tests-oldest-torch (every package's tests on the
oldest torch the packages admit), and dist and smoke (build and verify the release files,
then test them installed; `nox -s dist smoke`). bench, tests-oldest-torch, dist and smoke
never run by default.

Each package is tested in a virtualenv that holds only that package, its declared
dependencies (siblings installed from this checkout) and its dependency groups, so a
missing dependency in one package's metadata fails that package's session.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from email.parser import Parser
from pathlib import Path
from zipfile import ZipFile

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
DIST = ROOT / "dist"
PACKAGES = ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]
# Sibling packages each one depends on; installed from the checkout, never from an index.
SIBLINGS = {
    "tfs-core": [],
    "tfs-embeddings": ["tfs-core"],
    "tfs-attention": ["tfs-core"],
    "tfs-mlp": ["tfs-core"],
    "tfs-decoder": ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp"],
}

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "typecheck", "lint", "docs"]

# Pin torch and the tools for every install; uv reads UV_CONSTRAINT, pip PIP_CONSTRAINT.
os.environ["UV_CONSTRAINT"] = str(CONSTRAINTS)
os.environ["PIP_CONSTRAINT"] = str(CONSTRAINTS)
# uv does not read pip's find-links, where the CPU build of torch lies on our machines.
if "PIP_FIND_LINKS" in os.environ and "UV_FIND_LINKS" not in os.environ:
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
# With bytecode writing off, a fresh venv recompiles torch on every import (~10 s).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# OpenMP threads that wait for work sleep instead of spinning. The tests run two pytest
# workers on two cores, and some start 2-thread training processes beside them: spinning
# threads then take the cores the others need (the reproducibility test: 19 s instead of
# 10). It changes when torch's threads wait, not what they compute.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _install(session: nox.Session, package: str, *groups: str) -> None:
    """Install `package` and its siblings from the checkout, plus its dependency groups."""
    pyproject = nox.project.load_toml(ROOT / "packages" / package / "pyproject.toml")
    requirements = [
        req for group in groups for req in nox.project.dependency_groups(pyproject, group)
    ]
    paths = [str(ROOT / "packages" / name) for name in [*SIBLINGS[package], package]]
    session.install(*paths, *requirements)


def _define(
    kind: str,
    groups: tuple[str, ...],
    command: list[str],
    examples_commands: list[list[str]],
    extra: tuple[str, ...] = (),
) -> None:
    for package in PACKAGES:

        @nox.session(name=f"{kind}-{package}")
        def run(session: nox.Session, package: str = package) -> None:
            _install(session, package, *groups)
            where = f"packages/{package}"
            args = [arg.format(where=where) for arg in command]
            if kind == "tests" and package in XDIST_PACKAGES:
                args[1:1] = XDIST
            session.run(*args, *session.posargs)

    @nox.session(name=f"{kind}-examples")
    def examples(session: nox.Session) -> None:
        # tfs-decoder brings its four siblings: the examples use all five packages.
        _install(session, "tfs-decoder", *groups)
        for examples_command in examples_commands:
            session.run(*examples_command, *session.posargs)

    @nox.session(name=kind, venv_backend="none")
    def umbrella(session: nox.Session) -> None:
        names = [f"{kind}-{name}" for name in [*PACKAGES, "examples", *extra]]
        if kind != "tests":  # mypy's sessions share one cache folder: one at a time
            for name in names:
                session.notify(name)
            return
        longest = f"{kind}-tfs-decoder"
        _side_by_side(session, [longest], [name for name in names if name != longest])


def _side_by_side(session: nox.Session, first: list[str], second: list[str]) -> None:
    """Run two lists of sessions at once, each list in a nox process of its own, one
    session after another. The first list's output streams; the second's follows it."""
    command = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s"]
    posargs = ["--", *session.posargs] if session.posargs else []
    with tempfile.TemporaryFile("w+") as log:
        others = subprocess.Popen(
            [*command, *second, *posargs], stdout=log, stderr=subprocess.STDOUT
        )
        first_code = subprocess.run([*command, *first, *posargs], check=False).returncode
        second_code = others.wait()
        log.seek(0)
        print(log.read(), flush=True)
    failed = [
        name
        for code, names in ((first_code, first), (second_code, second))
        if code
        for name in names
    ]
    if failed:
        session.error(f"a session failed among: {', '.join(failed)} (output above)")


# pytest-xdist for the two longest test folders: a worker per core, each test handed to
# the next free worker. The shorter folders finish sooner without the workers' start-up.
XDIST = ["-n", "auto", "--dist", "worksteal"]
XDIST_PACKAGES = ["tfs-decoder"]
_define(
    "tests",
    ("test",),
    ["pytest", "{where}/tests"],
    [["pytest", *XDIST, "examples"]],
    extra=("scripts",),
)
# The repository's conftest.py (fixtures shared by every package's tests) is checked on its
# own: mypy cannot take two top-level modules named conftest in one run.
_define(
    "typecheck",
    ("typecheck",),
    ["mypy", "{where}/src", "{where}/tests"],
    [["mypy", "examples"], ["mypy", "conftest.py"]],
    extra=("scripts",),
)


OLDEST = {"torch": "2.4.1", "transformers": "4.46.3", "tokenizers": "0.20.3"}
"""The oldest torch the packages' metadata admits (``torch>=2.4``), and a transformers
(the ``hf`` extra and the tests' GPT-2 references; 5.x needs torch 2.6) and tokenizers
that run with it."""


@nox.session(name="tests-oldest-torch")
def tests_oldest_torch(session: nox.Session) -> None:
    """Every package's tests on OLDEST's versions instead of constraints.txt's pins. Not
    run by default: PyPI has only CUDA builds of that torch for Linux, several GB."""
    text = CONSTRAINTS.read_text(encoding="utf-8")
    for name, version in OLDEST.items():
        text = re.sub(rf"^{name}==\S+$", f"{name}=={version}", text, flags=re.M)
    oldest = Path(session.create_tmp()) / "constraints.txt"
    oldest.write_text(text, encoding="utf-8")
    session.env.update({"UV_CONSTRAINT": str(oldest), "PIP_CONSTRAINT": str(oldest)})
    _install(session, "tfs-decoder", "test")  # its test group holds the others' too
    for package in PACKAGES:
        session.run("pytest", *XDIST, f"packages/{package}/tests", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/*.md) built with --strict, so that any
    warning fails: a broken link or anchor, a missing snippet, a docstring the API pages
    cannot render. mkdocstrings reads the packages' src/ folders without importing them,
    so only the site's tools are installed (ruff formats the signatures). The site goes
    under .nox/, never into the checkout."""
    session.install("mkdocs", "mkdocs-material", "mkdocstrings[python]", "ruff")
    site = Path(session.create_tmp()) / "site"
    # NO_MKDOCS_2_WARNING: Material's banner about its end of life, printed on every build.
    env = {"NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", "--site-dir", str(site), *session.posargs, env=env)


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


@nox.session(name="tests-scripts")
def tests_scripts(session: nox.Session) -> None:
    """scripts/test_*.py: the version bump (on a temporary copy) and scripts/verify_dist.py."""
    session.install("pytest")  # the version pinned in constraints.txt
    session.run("pytest", "scripts", *session.posargs)


@nox.session(name="typecheck-scripts")
def typecheck_scripts(session: nox.Session) -> None:
    """mypy --strict on scripts/ (stdlib only, plus pytest for their tests)."""
    session.install("mypy", "pytest")  # the versions pinned in constraints.txt
    session.run("mypy", "scripts", *session.posargs)


@nox.session
def dist(session: nox.Session) -> None:
    """An sdist and a wheel of each package in dist/, checked by twine and
    verified by scripts/verify_dist.py (py.typed, README, license, no tests)."""
    session.install("hatch", "twine")
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    # hatch builds in its own environment, installing hatchling there with uv; nox's
    # UV_PYTHON and VIRTUAL_ENV would point uv at this session's virtualenv instead.
    # hatch's own data stays under .nox/.
    env = {
        "UV_PYTHON": None,
        "UV_PROJECT_ENVIRONMENT": None,
        "VIRTUAL_ENV": None,
        "HATCH_DATA_DIR": str(Path(session.create_tmp()).resolve() / "hatch"),
    }
    for package in PACKAGES:
        with session.chdir(ROOT / "packages" / package):
            session.run(
                "hatch", "build", "--target", "sdist", "--target", "wheel", str(DIST), env=env
            )
    files = sorted(str(path) for path in DIST.iterdir())
    session.run("twine", "check", "--strict", *files)
    session.run("python", str(ROOT / "scripts" / "verify_dist.py"), str(DIST))


def _wheel_requirements(wheel: Path) -> list[str]:
    """A wheel's Requires-Dist entries, without extras and without the tfs siblings."""
    with ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return [
        requirement
        for requirement in metadata.get_all("Requires-Dist") or []
        if "extra ==" not in requirement and not requirement.startswith("tfs-")
    ]


@nox.session(reuse_venv=False)
def smoke(session: nox.Session) -> None:
    """A fresh virtualenv with the wheels from dist/ (tfs-decoder installed by name, which
    must bring its four siblings from dist/ alone), then every package's tests run against
    the installed wheels, from a folder where the checkout's src/ cannot be imported."""
    wheels = sorted(DIST.glob("tfs_*.whl")) if DIST.is_dir() else []
    if len(wheels) != len(PACKAGES):
        session.error(
            f"dist/ holds {len(wheels)} of the {len(PACKAGES)} wheels: run `nox -s dist smoke`"
        )
    # Everything else comes from the usual index and find-links, pinned by constraints.txt:
    # the wheels' own requirements and each package's test group.
    third_party = {req for wheel in wheels for req in _wheel_requirements(wheel)}
    for package in PACKAGES:
        pyproject = nox.project.load_toml(ROOT / "packages" / package / "pyproject.toml")
        third_party.update(nox.project.dependency_groups(pyproject, "test"))
    session.install(*sorted(third_party))
    # The tfs packages from dist/ alone: no index, and tfs-decoder's == pins must find the
    # siblings there.
    # No cache: a wheel built earlier under the same version must not stand in for dist/'s.
    no_cache = "--no-cache" if session.venv_backend == "uv" else "--no-cache-dir"
    session.install("--no-index", no_cache, "--find-links", str(DIST), "tfs-decoder")
    session.run("python", str(ROOT / "scripts" / "verify_installed.py"), str(ROOT))
    with tempfile.TemporaryDirectory(prefix="tfs-smoke-") as where:
        session.chdir(where)
        for package in PACKAGES:
            tests = ROOT / "packages" / package / "tests"
            session.run("pytest", "-p", "no:cacheprovider", str(tests), *session.posargs)
        session.chdir(ROOT)
