"""Optional sampling profile of a process during a scenario (``--profile DIR``): py-spy, if
it is installed beside this Python or on PATH (``pip install py-spy``; not a dependency).

The raw output (collapsed stacks, one ``frame;frame;... count`` per line) is kept in DIR for
flame graphs; the report gets the top functions by own time and by time including callees.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RATE = 500
"""Samples per second."""


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class PySpy:
    """A running ``py-spy record`` attached to one pid."""

    popen: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def attach(cls, pid: int, out_dir: Path | None, name: str) -> PySpy | None:
        if out_dir is None:
            return None
        binary = py_spy()
        if binary is None:
            log.warning("--profile: py-spy not found (pip install py-spy); not profiling")
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / f"{name}.txt"
        popen = subprocess.Popen(
            [
                *(binary, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw"),
                *("--nonblocking", "--output", str(output)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return cls(popen, output)

    def stop(self) -> dict[str, Any] | None:
        """Stop recording (SIGINT makes py-spy write its file) and summarise it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        if not self.output.exists():
            return None
        return {"file": str(self.output), **summarise(self.output)}


_PLUMBING = ("<frozen ", "asyncio/", "runpy", "selectors.py", "__main__.py")
"""Frames every sample passes through (entry point, event loop): left out of ``inclusive``."""


def summarise(path: Path, top: int = 20) -> dict[str, Any]:
    """Top functions by own samples and by inclusive samples (event-loop plumbing left out),
    as % of all samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if not any(part in frame for part in _PLUMBING):
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]

    return {"samples": total, "own_pct": share(own), "inclusive_pct": share(inclusive)}
