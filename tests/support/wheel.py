"""FerrisQueue as a user or an image gets it: a wheel built from the checkout, what that wheel
installs, and a fresh virtualenv that holds nothing else.

The wheel is built from a copy of the Docker build context (the checkout less what
``.dockerignore`` leaves out), as the Dockerfile's builder stage builds it, and never in the
checkout itself: setuptools' ``build/`` folder there could carry stale files into the wheel.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def dockerignore_patterns(root: Path = REPO) -> list[str]:
    """The patterns of ``.dockerignore`` (comments and blank lines dropped)."""
    lines = (root / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    exceptions = [p for p in patterns if p.startswith("!")]
    # Docker's exceptions re-include paths; this reader would ignore them silently.
    assert not exceptions, f".dockerignore exceptions are not supported here: {exceptions}"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``relative`` (a posix path in the context) out of the context:
    a pattern matches the path from the context's root, ``**/`` any number of folders."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(relative, pattern.strip("/")):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatchcase(
            relative.rsplit("/", 1)[-1], pattern.removeprefix("**/")
        ):
            return True
    return False


def copy_build_context(destination: Path, root: Path = REPO) -> Path:
    """Copy what ``docker build .`` would send (symlinks kept as symlinks) to ``destination``."""
    patterns = dockerignore_patterns(root)

    def skip(folder: str, names: list[str]) -> set[str]:
        base = Path(folder).relative_to(root).as_posix()
        prefix = "" if base == "." else f"{base}/"
        return {name for name in names if ignored(prefix + name, patterns)}

    shutil.copytree(root, destination, symlinks=True, ignore=skip)
    return destination


@dataclass(frozen=True)
class Wheel:
    """A built wheel and what it installs."""

    path: Path
    files: frozenset[str]
    """Every path in the wheel's RECORD (relative to site-packages)."""
    console_scripts: dict[str, str]
    """Console script name -> ``module:function``."""

    def runs_module(self, module: str) -> bool:
        """Whether ``python -m module`` runs code this wheel installs."""
        path = module.replace(".", "/")
        return f"{path}/__main__.py" in self.files or f"{path}.py" in self.files

    def top_level_packages(self) -> set[str]:
        return {f.split("/")[0] for f in self.files if f.count("/") == 1 and "__init__" in f}


def read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        files = frozenset(
            line.split(",")[0] for line in archive.read(record).decode().splitlines() if line
        )
        scripts: dict[str, str] = {}
        entry_points = record.replace("RECORD", "entry_points.txt")
        if entry_points in names:
            parser = configparser.ConfigParser()
            parser.read_string(archive.read(entry_points).decode())
            if parser.has_section("console_scripts"):
                scripts = dict(parser["console_scripts"])
    return Wheel(path, files, scripts)


def build_wheel(workdir: Path) -> Wheel:
    """Build the project's wheel from a copy of the build context under ``workdir``.

    No build isolation: the test environment's setuptools (``dev`` extra, the version
    ``[build-system]`` asks for) builds it, so no download is needed.
    """
    context = copy_build_context(workdir / "context")
    out = workdir / "dist"
    pip = [sys.executable, "-m", "pip"]
    result = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(context)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = out.glob("ferrisqueue-*.whl")
    return read_wheel(wheel)


def clean_env(venv: Path) -> dict[str, str]:
    """This machine's environment as a fresh shell in ``venv`` would see it: no PYTHONPATH (the
    tests' own points at the checkout), no other virtualenv, no FQ_ settings."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("FQ_")}
    other_venv = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != other_venv]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv))
    return env


@dataclass(frozen=True)
class Venv:
    """A virtualenv holding the wheel and its dependencies, and nothing from the checkout."""

    root: Path
    install_seconds: float

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def script(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def env(self, **extra: str) -> dict[str, str]:
        return {**clean_env(self.root), **extra}


def install_into_fresh_venv(wheel: Wheel, root: Path) -> Venv:
    """A new venv at ``root`` (outside the checkout) with ``wheel`` installed, not editable.

    The dependencies come from the package index like any user's (pip's cache and the
    configured local mirrors make that about 25 s here, most of it unpacking). The tests' pip
    drives the install (``pip --python``), so the venv needs no pip of its own; nothing of the
    tests' environment goes into it. ``--no-compile``: byte-compiling some 600 MB of
    dependencies would double the time; the services compile what they import.
    """
    assert not root.resolve().is_relative_to(REPO), f"{root} is inside the checkout"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        check=True,
        timeout=60,
        env=clean_env(root),
    )
    started = time.monotonic()
    pip = [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python")]
    result = subprocess.run(
        [*pip, "install", "--quiet", "--no-compile", str(wheel.path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=root,
        env=clean_env(root),
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    return Venv(root, seconds)
