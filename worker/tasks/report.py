"""The ``report`` task (being written: see issue 5)."""

from __future__ import annotations

from ferrisqueue.settings import Settings
from worker.registry import TaskRegistry


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``report`` jobs."""
