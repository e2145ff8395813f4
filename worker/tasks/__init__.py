"""Built-in tasks. :func:`default_registry` is what a worker runs unless told otherwise."""

from __future__ import annotations

from worker.registry import TaskRegistry
from worker.tasks import basic


def default_registry() -> TaskRegistry:
    registry = TaskRegistry()
    basic.register(registry)
    return registry
