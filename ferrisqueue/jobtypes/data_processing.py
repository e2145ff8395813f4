"""Contract of the ``data_processing`` job type (being written: see issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ferrisqueue.jobtypes import JobType


class DataProcessingPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


JOB_TYPE = JobType(
    name="data_processing", description="(being written)", payload=DataProcessingPayload
)
