"""Verify that the five tfs packages are installed from wheels, at one version, and that
importing them does not reach the checkout's src/ folders (run by `nox -s smoke`).

    python scripts/verify_installed.py REPO_ROOT
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import sysconfig
from pathlib import Path

PACKAGES = ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]


def problems(root: Path) -> list[str]:
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    found: list[str] = []
    versions: dict[str, str] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package}: not installed (tfs-decoder should have pulled it in)")
            continue
        direct_url = importlib.metadata.distribution(package).read_text("direct_url.json")
        if direct_url and '"editable": true' in direct_url.replace(" ", "").replace(
            ":true", ": true"
        ):
            found.append(f"{package}: installed editable, not from a wheel")
        module = importlib.import_module(package.replace("-", "_"))
        where = Path(module.__file__ or "").resolve()
        if not where.is_relative_to(site_packages):
            found.append(f"{package}: imported from {where}, outside {site_packages}")
        if where.is_relative_to(root.resolve()) and not where.is_relative_to(site_packages):
            found.append(f"{package}: imported from the checkout ({where})")
    if len(set(versions.values())) > 1:
        found.append(f"the packages are not at one version: {versions}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: verify_installed.py REPO_ROOT", file=sys.stderr)
        return 2
    found = problems(Path(argv[0]))
    for line in found:
        print(f"verify_installed: {line}", file=sys.stderr)
    if found:
        return 1
    print(
        "verify_installed: "
        + ", ".join(f"{p} {importlib.metadata.version(p)}" for p in PACKAGES)
        + f" imported from {sysconfig.get_paths()['purelib']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
