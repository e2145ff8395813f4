"""Contract of the ``report`` job type (being written: see issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ferrisqueue.jobtypes import JobType


class ReportPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


JOB_TYPE = JobType(name="report", description="(being written)", payload=ReportPayload)
