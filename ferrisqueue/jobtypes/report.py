"""Contract of the ``report`` job type: statistics of the queue over a period, from the read
store, written as HTML, PDF and/or CSV files under the storage root.

The period is half-open, ``[since, until)``, over the jobs' *creation* time; ``until`` unset
means "when the job runs". Artifacts are named after the job id (``<output_dir>/<job_id>.html``
and so on), so a job that runs twice overwrites its own files instead of leaving two reports.
What the numbers mean (percentile method, wait and run time) is documented in
:mod:`worker.reporting`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from ferrisqueue.jobtypes import JobType

ReportFormat = Literal["html", "pdf", "csv"]
"""The renderings a report job can write (the file extension is the format's name)."""

QueueName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class ReportPayload(BaseModel):
    """Which jobs to count and which files to write."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime = Field(
        description="Start of the period (inclusive): jobs created at or after this time. "
        "Must carry a timezone, e.g. 2026-01-01T00:00:00Z."
    )
    until: AwareDatetime | None = Field(
        default=None,
        description="End of the period (exclusive). Unset: the moment the job runs.",
    )
    queues: list[QueueName] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Count only jobs of these queues. Unset: every queue.",
    )
    formats: list[ReportFormat] = Field(
        default=["html"],
        min_length=1,
        max_length=10,
        description="Files to write, one per format (duplicates are ignored).",
    )
    output_dir: str = Field(
        default="reports",
        min_length=1,
        max_length=255,
        description="Folder of the artifacts, relative to the storage root.",
    )

    @field_validator("formats")
    @classmethod
    def _once_each(cls, value: list[ReportFormat]) -> list[ReportFormat]:
        return list(dict.fromkeys(value))

    @field_validator("output_dir")
    @classmethod
    def _relative(cls, value: str) -> str:
        # Caught here so the gateway answers 422; the worker checks again against the real
        # filesystem (symlinks) with worker.storage.inside.
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts or "\\" in value:
            raise ValueError("must be a relative path inside the storage root, without '..'")
        return value

    @model_validator(mode="after")
    def _period_not_empty(self) -> ReportPayload:
        if self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class ReportTotals(BaseModel):
    """The headline numbers of the report."""

    model_config = ConfigDict(extra="forbid")

    jobs: int = Field(description="Jobs created in the period (every status).")
    completed: int = Field(description="Of those, completed.")
    failed: int = Field(description="Of those, failed (dead-lettered included).")


class ReportResult(BaseModel):
    """Where the report went and what it says in brief."""

    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="Start of the period covered (inclusive, UTC).")
    until: datetime = Field(description="End of the period covered (exclusive, UTC).")
    queues: list[str] | None = Field(description="The queues counted; null: all of them.")
    artifacts: dict[ReportFormat, str] = Field(
        description="The file of each format, relative to the storage root."
    )
    totals: ReportTotals


JOB_TYPE = JobType(
    name="report",
    description="Statistics of the queue over a period (counts by status and type, failure "
    "reasons, wait and run time percentiles) written as HTML, PDF and/or CSV files under "
    "the storage root, named after the job id.",
    payload=ReportPayload,
    result=ReportResult,
)
