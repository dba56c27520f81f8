"""Verify the built distributions in a folder (default: dist/ at the repository root).

Every wheel must hold its package's ``py.typed``, carry its README as the long
description (in METADATA), ship its license file, and hold no tests or bytecode; every
package needs both an sdist and a wheel, all at one version (the packages are released in
lockstep), and sibling pins must name that version. Each problem is printed as one line
naming the file and what is wrong; the exit status is 1 if there was any.

    python scripts/verify_dist.py [DIST_DIR]
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["tfs-core", "tfs-embeddings", "tfs-attention", "tfs-mlp", "tfs-decoder"]


def _module(package: str) -> str:
    return package.replace("-", "_")


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def verify_wheel(wheel: Path, package: str, version: str) -> list[str]:
    """Problems with one wheel, one line each."""
    problems: list[str] = []

    def problem(what: str) -> None:
        problems.append(f"{wheel.name}: {what}")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = f"{_module(package)}-{version}.dist-info"
        if f"{dist_info}/METADATA" not in names:
            problem(f"no {dist_info}/METADATA")
            return problems
        metadata_text = archive.read(f"{dist_info}/METADATA").decode()
        license_files = [n for n in names if n.startswith(f"{dist_info}/licenses/")]
        licenses_nonempty = all(archive.read(n).strip() for n in license_files)

    metadata = Parser().parsestr(metadata_text)
    module = _module(package)

    if f"{module}/py.typed" not in names:
        problem(f"no py.typed (expected {module}/py.typed)")
    if not any(n.startswith(f"{module}/") and n.endswith(".py") for n in names):
        problem(f"no {module}/*.py modules")

    # The README as the long description: the METADATA body, in Markdown.
    body = metadata.get_payload()
    body_text = body if isinstance(body, str) else ""
    if not body_text.strip():
        problem("no long description (README) in METADATA")
    else:
        readme = ROOT / "packages" / package / "README.md"
        if readme.is_file() and _normalized(body_text) != _normalized(readme.read_text()):
            problem(f"long description in METADATA differs from {readme.relative_to(ROOT)}")
    if metadata.get("Description-Content-Type", "") != "text/markdown":
        problem(
            "Description-Content-Type is "
            f"{metadata.get('Description-Content-Type')!r}, expected 'text/markdown'"
        )

    # The license: an SPDX expression and the file itself under .dist-info/licenses/.
    if not metadata.get("License-Expression"):
        problem("no License-Expression in METADATA")
    if not license_files:
        problem(f"no license file (expected {dist_info}/licenses/LICENSE)")
    elif not licenses_nonempty:
        problem("a license file is empty")
    for declared in metadata.get_all("License-File") or []:
        if f"{dist_info}/licenses/{declared}" not in names:
            problem(f"METADATA declares License-File {declared!r}, missing from the wheel")

    # Tests and bytecode stay out of wheels.
    for name in names:
        path = PurePosixPath(name)
        if {"tests", "test"} & set(path.parts[:-1]) or path.name == "conftest.py":
            problem(f"ships tests: {name}")
            break
        if path.name.startswith("test_") and path.suffix == ".py":
            problem(f"ships tests: {name}")
            break
    for name in names:
        if "__pycache__" in name or name.endswith((".pyc", ".pyo")):
            problem(f"ships bytecode: {name}")
            break

    # Lockstep: every sibling pin names this release's version.
    for requirement in metadata.get_all("Requires-Dist") or []:
        for sibling in PACKAGES:
            if requirement.startswith(f"{sibling}") and not requirement.startswith(
                f"{sibling}=={version}"
            ):
                problem(f"Requires-Dist {requirement!r} does not pin {sibling}=={version}")
    return problems


def verify_sdist(sdist: Path, package: str, version: str) -> list[str]:
    """Problems with one sdist, one line each."""
    top = f"{_module(package)}-{version}"
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
    wanted = [
        "PKG-INFO",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        f"src/{_module(package)}/__init__.py",
    ]
    return [f"{sdist.name}: no {name}" for name in wanted if f"{top}/{name}" not in names]


def verify(dist: Path) -> list[str]:
    """Every problem with the distributions in `dist`, one line each."""
    if not dist.is_dir():
        return [f"{dist}: no such folder; build it with `nox -s dist`"]
    problems: list[str] = []
    versions: dict[str, str] = {}
    for package in PACKAGES:
        module = _module(package)
        wheels = sorted(dist.glob(f"{module}-*.whl"))
        sdists = sorted(dist.glob(f"{module}-*.tar.gz"))
        if len(wheels) != 1:
            problems.append(f"{dist}: expected one {module} wheel, found {len(wheels)}")
        if len(sdists) != 1:
            problems.append(f"{dist}: expected one {module} sdist, found {len(sdists)}")
        if len(wheels) != 1:
            continue
        version = wheels[0].name.split("-")[1]
        versions[package] = version
        problems += verify_wheel(wheels[0], package, version)
        if len(sdists) == 1:
            if sdists[0].name != f"{module}-{version}.tar.gz":
                problems.append(f"{sdists[0].name}: version differs from {wheels[0].name}")
            else:
                problems += verify_sdist(sdists[0], package, version)
    if len(set(versions.values())) > 1:
        found = ", ".join(f"{name} {v}" for name, v in versions.items())
        problems.append(f"{dist}: packages are not at one version: {found}")
    return problems


def main(argv: list[str]) -> int:
    dist = Path(argv[0]) if argv else ROOT / "dist"
    problems = verify(dist)
    for line in problems:
        print(f"verify_dist: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"verify_dist: {len(PACKAGES)} wheels and sdists in {dist} look complete")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
