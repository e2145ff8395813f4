"""Built-in tasks. :func:`default_registry` is what a worker runs unless told otherwise."""

from __future__ import annotations

from ferrisqueue.jobtypes import load_job_types
from ferrisqueue.settings import Settings
from worker.registry import TaskRegistry, load_plugins
from worker.tasks import basic, cleanup, data_processing, email, image, report


def default_registry(settings: Settings) -> TaskRegistry:
    """The built-in tasks and every installed plugin's, checked against their contracts."""
    registry = TaskRegistry(load_job_types())
    basic.register(registry)
    for module in (email, image, cleanup, data_processing, report):
        module.register(registry, settings)
    load_plugins(registry, settings)
    return registry
