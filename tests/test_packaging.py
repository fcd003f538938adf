"""Clean packaging (issue 27): every folder that ships is a declared package, and a build prints no warning."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = CONFIG["tool"]["setuptools"]


def _folder(package: str) -> Path:
    """Where ``package`` lives in the source tree, following ``package-dir``."""
    parts = package.split(".")
    for n in range(len(parts), 0, -1):
        mapped = SETUPTOOLS["package-dir"].get(".".join(parts[:n]))
        if mapped is not None:
            return ROOT / mapped / Path(*parts[n:])
    return ROOT / Path(*parts)


def test_every_folder_with_files_is_a_declared_package_and_its_data_is_shipped():
    packages = set(SETUPTOOLS["packages"])
    declared = {_folder(p).resolve(): p for p in packages}
    for top in {_folder(p) for p in packages if p.count(".") <= 1}:
        for folder in [top, *top.rglob("*")]:
            if not folder.is_dir() or folder.name == "__pycache__" or not any(f.is_file() for f in folder.iterdir()):
                continue
            assert folder.resolve() in declared, f"{folder.relative_to(ROOT)} holds files but is not a declared package"
            package = declared[folder.resolve()]
            patterns = SETUPTOOLS.get("package-data", {}).get(package, [])
            for f in folder.iterdir():
                if f.is_file() and f.suffix not in (".py", ".pyc"):
                    assert any(fnmatch.fnmatch(f.name, p) for p in patterns), f"{f.relative_to(ROOT)} is not shipped"
    assert isinstance(CONFIG["project"]["license"], str)  # an SPDX expression: the table form is deprecated


def test_a_wheel_builds_without_a_warning(tmp_path):
    import setuptools

    need = 77  # the SPDX `license` string; an isolated build (pip) installs what [build-system] asks
    if int(setuptools.__version__.split(".")[0]) < need:
        pytest.skip(f"this environment's setuptools is {setuptools.__version__}; the build check needs >= {need}")
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", "demo-output", "tests", "benchmarks", "docs"
        ),
    )
    code = "from setuptools import build_meta as b; print(b.build_wheel('dist'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # else: "byte-compiling is disabled"
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    noisy = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if any(w in line.lower() for w in ("warning", "would be ignored", "deprecat"))
    ]
    assert noisy == [], noisy
    import zipfile

    names = zipfile.ZipFile(src / "dist" / done.stdout.strip().splitlines()[-1]).namelist()
    assert "pertstore/catalog/data/human_genes.tsv.gz" in names and "pertstore/store/_neighbors.py" in names
