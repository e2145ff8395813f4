"""Built-in tasks. :func:`default_registry` is what a worker runs unless told otherwise.

The file-handling types pull in heavy libraries (Pillow, fpdf2, Jinja2, SQLAlchemy): each is
imported on its first job, not at start, so a worker that never runs one stays small
(~40 MiB instead of ~100 MiB resident).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import Handler, TaskRegistry, load_plugins
from worker.tasks import basic

_ON_FIRST_USE = {
    "email": "worker.tasks.email",
    "image": "worker.tasks.image",
    "cleanup": "worker.tasks.cleanup",
    "data_processing": "worker.tasks.data_processing",
    "report": "worker.tasks.report",
}


def default_registry(settings: Settings) -> TaskRegistry:
    """The built-in tasks and every installed plugin's, checked against their contracts."""
    registry = TaskRegistry(load_job_types())
    basic.register(registry)
    for name, module in _ON_FIRST_USE.items():
        registry.task(name)(_loaded_on_first_use(name, module, settings))
    load_plugins(registry, settings)
    return registry


def _loaded_on_first_use(name: str, module: str, settings: Settings) -> Handler:
    """A handler that imports ``module``, registers it, and from then on calls its handler
    (in a thread when it is a plain ``def``, as the registry would)."""
    loaded: list[Handler] = []

    async def handler(ctx: JobContext, payload: Any) -> Any:
        if not loaded:
            # Imported in a thread: a slow import must not stall other jobs' lease heartbeats.
            imported = await asyncio.to_thread(importlib.import_module, module)
            own = TaskRegistry()
            imported.register(own, settings)
            loaded.append(own.handler(name))
        real = loaded[0]
        if inspect.iscoroutinefunction(real):
            return await real(ctx, payload)
        return await asyncio.to_thread(real, ctx, payload)

    return handler
