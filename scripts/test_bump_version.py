"""scripts/bump_version.py, run against a temporary copy of the packages' pyproject files;
the real ones are never written."""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from pathlib import Path

import pytest
from bump_version import PACKAGES, ROOT, BumpError, bump, main, validate


def _digests() -> dict[Path, str]:
    paths = [ROOT / "packages" / package / "pyproject.toml" for package in PACKAGES]
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of each package's pyproject.toml (and __init__.py) under tmp_path."""
    for package in PACKAGES:
        target = tmp_path / "packages" / package
        target.mkdir(parents=True)
        shutil.copy(ROOT / "packages" / package / "pyproject.toml", target / "pyproject.toml")
    return tmp_path


def _project(repo: Path, package: str) -> dict[str, object]:
    text = (repo / "packages" / package / "pyproject.toml").read_text()
    project = tomllib.loads(text)["project"]
    assert isinstance(project, dict)
    return project


def test_bump_sets_every_version_and_sibling_pin(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digests()
    old = _project(repo, "tfs-decoder")["version"]
    assert main(["9.8.7rc1", "--root", str(repo)]) == 0
    for package in PACKAGES:
        assert _project(repo, package)["version"] == "9.8.7rc1"
    dependencies = _project(repo, "tfs-decoder")["dependencies"]
    assert isinstance(dependencies, list)
    pins = sorted(dep for dep in dependencies if dep.startswith("tfs-"))
    assert pins == [
        "tfs-attention==9.8.7rc1",
        "tfs-core==9.8.7rc1",
        "tfs-embeddings==9.8.7rc1",
        "tfs-mlp==9.8.7rc1",
    ]
    out = capsys.readouterr().out
    assert out.count(f"version {old} -> 9.8.7rc1") == len(PACKAGES)
    assert f"tfs-mlp=={old} -> tfs-mlp==9.8.7rc1" in out
    assert _digests() == before  # the real pyproject files are untouched


def test_bump_keeps_the_rest_of_the_file(repo: Path) -> None:
    path = repo / "packages" / "tfs-decoder" / "pyproject.toml"
    original = path.read_text()
    bump(repo, "0.2.0")
    changed = path.read_text().splitlines()
    differing = [(a, b) for a, b in zip(original.splitlines(), changed, strict=True) if a != b]
    assert len(differing) == 5  # version and the four sibling pins; nothing else
    # torch's lower bound and the optional dependencies keep their text.
    assert '"torch>=2.4",' in changed[changed.index("dependencies = [") + 1]


def test_bump_rewrites_dunder_version(repo: Path) -> None:
    init = repo / "packages" / "tfs-mlp" / "src" / "tfs_mlp" / "__init__.py"
    init.parent.mkdir(parents=True)
    init.write_text('"""tfs_mlp."""\n\n__version__ = "0.0.1"\nOTHER = "0.0.1"\n')
    changes = bump(repo, "1.0.0")
    assert init.read_text() == '"""tfs_mlp."""\n\n__version__ = "1.0.0"\nOTHER = "0.0.1"\n'
    assert f"{init}: __version__ 0.0.1 -> 1.0.0" in changes


def test_bump_twice_changes_nothing_the_second_time(repo: Path) -> None:
    assert bump(repo, "0.3.0")
    assert bump(repo, "0.3.0") == []


@pytest.mark.parametrize("bad", ["1.2", "v1.2.3", "1.2.3-rc1", "1.2.3.dev1", "1.2.3rc", ""])
def test_bad_version_is_refused(repo: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BumpError, match=r"version: expected N\.N\.N .*got"):
        validate(bad)
    before = {p: p.read_text() for p in repo.rglob("pyproject.toml")}
    assert main([bad, "--root", str(repo)]) == 2
    assert "bump_version: error: version: expected N.N.N" in capsys.readouterr().err
    assert {p: p.read_text() for p in repo.rglob("pyproject.toml")} == before


@pytest.mark.parametrize("good", ["0.1.0", "10.20.30", "1.0.0a1", "1.0.0b2", "1.0.0rc10"])
def test_good_versions_pass(good: str) -> None:
    assert validate(good) == good


def test_missing_pyproject_is_an_error(repo: Path) -> None:
    (repo / "packages" / "tfs-mlp" / "pyproject.toml").unlink()
    with pytest.raises(BumpError, match=r"no such file: .*tfs-mlp"):
        bump(repo, "0.2.0")
