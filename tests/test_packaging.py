"""What `pip install kubenetdiag` puts on an SRE's laptop: the product and every data file it
reads at run time, and none of the lab (it needs root and lives in lab/, a package of its own)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: setuptools leaves build/ and egg-info behind in the tree it builds.
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(tree)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (wheel,) = out.glob("kubenetdiag-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_holds_no_lab_code(wheel_names: set[str]) -> None:
    lab = sorted(n for n in wheel_names if n.startswith(("kubenetdiag_lab/", "kubenetdiag/lab/")))
    assert lab == []


def test_the_wheel_holds_every_file_of_the_product(wheel_names: set[str]) -> None:
    # A rule file, a fact kind, a template or a schema left out of package data works from a
    # clone and fails on the laptop.
    source = ROOT / "src" / "kubenetdiag"
    files = {
        "kubenetdiag/" + p.relative_to(source).as_posix()
        for p in source.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert sorted(files - wheel_names) == []


def test_the_wheel_declares_the_commands_and_no_lab_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(name).decode()
    lines = {line.replace(" ", "") for line in text.splitlines()}
    assert {"kubenetdiag=kubenetdiag.entry:main",
            "diagnose=kubenetdiag.entry:diagnose_main"} <= lines
    assert "kubenetdiag.commands" not in text  # the lab adds `lab` from its own package
