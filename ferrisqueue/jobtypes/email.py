"""Contract of the ``email`` job type (being written: see issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ferrisqueue.jobtypes import JobType


class EmailPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


JOB_TYPE = JobType(name="email", description="(being written)", payload=EmailPayload)
