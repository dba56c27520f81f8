"""scripts/verify_dist.py on small hand-made wheels and sdists in a temporary folder."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from verify_dist import PACKAGES, ROOT, verify

VERSION = "0.1.0"


def _metadata(package: str, readme: str, pins: str) -> str:
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {package}",
        f"Version: {VERSION}",
        "License-Expression: MIT",
        "License-File: LICENSE",
        "Requires-Dist: torch>=2.4",
    ]
    if package != "tfs-core":
        lines.append(f"Requires-Dist: tfs-core=={pins}")
    if package == "tfs-decoder":
        lines += [f"Requires-Dist: {sibling}=={pins}" for sibling in PACKAGES[1:4]]
    lines.append("Description-Content-Type: text/markdown")
    return "\n".join(lines) + "\n\n" + readme


def _write(dist: Path, skip: str = "", extra: str = "", pins: str = VERSION) -> None:
    """One wheel and one sdist per package; `skip` leaves out files ending so, `extra`
    adds a file to every wheel."""
    dist.mkdir(exist_ok=True)
    for package in PACKAGES:
        module = package.replace("-", "_")
        readme = (ROOT / "packages" / package / "README.md").read_text()
        info = f"{module}-{VERSION}.dist-info"
        files = {
            f"{module}/__init__.py": "",
            f"{module}/py.typed": "",
            f"{info}/METADATA": _metadata(package, readme, pins),
            f"{info}/licenses/LICENSE": "MIT License\n",
        }
        if extra:
            files[f"{module}/{extra}"] = ""
        with zipfile.ZipFile(dist / f"{module}-{VERSION}-py3-none-any.whl", "w") as wheel:
            for name, text in files.items():
                if not (skip and name.endswith(skip)):
                    wheel.writestr(name, text)
        top = f"{module}-{VERSION}"
        with tarfile.open(dist / f"{top}.tar.gz", "w:gz") as sdist:
            for name in ["PKG-INFO", "pyproject.toml", "README.md", "LICENSE"]:
                data = b"x"
                entry = tarfile.TarInfo(f"{top}/{name}")
                entry.size = len(data)
                sdist.addfile(entry, io.BytesIO(data))
            entry = tarfile.TarInfo(f"{top}/src/{module}/__init__.py")
            sdist.addfile(entry, io.BytesIO(b""))


def test_complete_files_pass(tmp_path: Path) -> None:
    _write(tmp_path)
    assert verify(tmp_path) == []


@pytest.mark.parametrize(
    ("skip", "extra", "message"),
    [
        ("py.typed", "", "tfs_mlp-0.1.0-py3-none-any.whl: no py.typed (expected tfs_mlp/py.typed)"),
        ("licenses/LICENSE", "", "tfs_mlp-0.1.0-py3-none-any.whl: no license file"),
        ("", "tests/test_mlp.py", "tfs_mlp-0.1.0-py3-none-any.whl: ships tests: tfs_mlp/tests"),
        ("", "__pycache__/mlp.cpython-311.pyc", "tfs_mlp-0.1.0-py3-none-any.whl: ships bytecode"),
    ],
)
def test_each_missing_piece_is_named(tmp_path: Path, skip: str, extra: str, message: str) -> None:
    _write(tmp_path, skip=skip, extra=extra)
    problems = verify(tmp_path)
    assert any(line.startswith(message) for line in problems), problems
    assert {line.split(":")[0] for line in problems} == {
        f"{package.replace('-', '_')}-{VERSION}-py3-none-any.whl" for package in PACKAGES
    }


def test_a_sibling_pin_at_another_version_is_named(tmp_path: Path) -> None:
    _write(tmp_path, pins="0.0.9")
    problems = verify(tmp_path)
    assert len(problems) == 7, problems  # three components pin tfs-core, tfs-decoder four
    assert any(
        "tfs_decoder-0.1.0-py3-none-any.whl: Requires-Dist 'tfs-mlp==0.0.9' does not pin" in p
        for p in problems
    ), problems


def test_missing_folder_says_to_build(tmp_path: Path) -> None:
    assert verify(tmp_path / "dist") == [
        f"{tmp_path / 'dist'}: no such folder; build it with `nox -s dist`"
    ]
