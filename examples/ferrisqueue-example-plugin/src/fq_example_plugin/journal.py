"""The plugin's per-worker resource: an append-only journal of JSON lines.

It stands for what a real plugin opens once per worker (a connection pool, an HTTP client):
opened when the worker starts, closed when it stops, reached by the handler through
``ctx.resource(Journal)`` and never through a module global.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any


class Journal:
    """One JSON object per line, appended to ``path`` and flushed at once."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        # A plain ``def`` handler writes from its worker thread while hooks write from the
        # event loop: one lock keeps the lines whole.
        self._lock = threading.Lock()

    def write(self, **fields: Any) -> None:
        """Append one line. A short local append: fine on the event loop, but a real
        network client would be awaited instead."""
        line = json.dumps(fields, sort_keys=True) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
