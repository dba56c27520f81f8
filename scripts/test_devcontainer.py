""".devcontainer/devcontainer.json: plain JSON that sets up what the README says (Python
3.11, the CPU build of the torch version constraints.txt pins, nox, the five packages
editable with their test and typecheck groups)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVCONTAINER = ROOT / ".devcontainer" / "devcontainer.json"
PACKAGES = ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]


def _config() -> dict[str, Any]:
    config = json.loads(DEVCONTAINER.read_text())  # plain JSON: no JSONC comments
    assert isinstance(config, dict)
    return config


def _command() -> str:
    command = _config()["postCreateCommand"]
    assert isinstance(command, str)
    return command


def _constraint(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(rf"{re.escape(name)}==(\S+)", line.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"constraints.txt pins no {name}")


def test_image_is_the_python_3_11_devcontainer() -> None:
    assert re.fullmatch(
        r"mcr\.microsoft\.com/devcontainers/python:\d+-3\.11(-\w+)?", _config()["image"]
    )


def test_torch_is_the_cpu_build_of_the_constraints_pin() -> None:
    pin = _constraint("torch")
    assert f"torch=={pin} --index-url https://download.pytorch.org/whl/cpu" in _command()
    # nox's own virtualenvs find the CPU build through pip's find-links (uv gets it from
    # the noxfile), instead of the multi-GB CUDA build on PyPI.
    assert _config()["containerEnv"]["PIP_FIND_LINKS"].startswith(
        "https://download.pytorch.org/whl/cpu/"
    )


def test_pip_is_new_enough_for_dependency_groups() -> None:
    command = _command()
    assert "--group " in command
    assert "'pip>=25.1'" in command
    assert command.index("'pip>=25.1'") < command.index("--group ")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_installed_editable(package: str) -> None:
    assert f"-e ./packages/{package}" in _command().split(" && ")[-1]


def test_tools_come_from_the_constraints_and_the_groups() -> None:
    last = _command().split(" && ")[-1]
    assert "-c constraints.txt" in last
    assert "nox[uv]" in last
    group = re.search(r"--group (\S+):(\w+)", last)
    assert group is not None
    pyproject = tomllib.loads((ROOT / group.group(1)).read_text())
    groups = pyproject["dependency-groups"]
    assert group.group(2) in groups
    # tfs-decoder's test group is the largest: every other package's test tools are in it.
    decoder_test = {str(req) for req in groups["test"]}
    for package in PACKAGES:
        other = tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())
        assert {str(req) for req in other["dependency-groups"]["test"]} <= decoder_test


def test_vscode_gets_the_python_and_ruff_extensions() -> None:
    extensions = _config()["customizations"]["vscode"]["extensions"]
    assert {"ms-python.python", "charliermarsh.ruff"} <= set(extensions)


def test_the_readme_documents_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ".devcontainer/devcontainer.json" in readme
    assert "Reopen in Container" in readme
