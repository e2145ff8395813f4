"""Contract of the ``cleanup`` job type (being written: see issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ferrisqueue.jobtypes import JobType


class CleanupPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


JOB_TYPE = JobType(name="cleanup", description="(being written)", payload=CleanupPayload)
