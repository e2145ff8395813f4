"""Contract of the ``image`` job type (being written: see issue 5)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ferrisqueue.jobtypes import JobType


class ImagePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")


JOB_TYPE = JobType(name="image", description="(being written)", payload=ImagePayload)
