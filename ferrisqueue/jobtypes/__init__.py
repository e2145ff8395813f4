"""Job types: the *contracts* (payload and result models) that producers and workers share.

A contract lives apart from the code that runs it: the gateway validates payloads and
publishes JSON Schemas with the contracts alone, while handlers live with the workers
(``worker/tasks``). Built-in contracts are in this package; a plugin adds its own through
the ``ferrisqueue.job_types`` entry-point group (each entry point names a :class:`JobType`)
and its handlers through ``ferrisqueue.tasks`` (see ``worker.registry``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ferrisqueue.job_types"


@dataclass(frozen=True)
class JobType:
    """What a job of type ``name`` takes and gives back."""

    name: str
    description: str
    payload: type[BaseModel]
    result: type[BaseModel] | None = None

    def schema(self) -> dict[str, Any]:
        """The type as ``GET /job-types`` lists it."""
        return {
            "name": self.name,
            "description": self.description,
            "payload_schema": self.payload.model_json_schema(),
            "result_schema": self.result.model_json_schema() if self.result else None,
        }


def builtin_job_types() -> list[JobType]:
    """The contracts of the job types FerrisQueue ships."""
    from ferrisqueue.jobtypes import builtin

    return list(builtin.JOB_TYPES)


def plugin_job_types() -> list[JobType]:
    """Contracts that installed plugins declare (entry-point group ``ferrisqueue.job_types``)."""
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        job_type = entry.load()
        if not isinstance(job_type, JobType):
            raise TypeError(f"entry point {entry.name} = {entry.value} is not a JobType")
        found.append(job_type)
    return found


def load_job_types() -> dict[str, JobType]:
    """Every known job type by name: built-ins, then plugins (a plugin cannot replace one)."""
    known: dict[str, JobType] = {}
    for job_type in builtin_job_types() + plugin_job_types():
        if job_type.name in known:
            raise ValueError(f"job type {job_type.name!r} is declared twice")
        known[job_type.name] = job_type
    return known
