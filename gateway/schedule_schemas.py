"""Request and response models of ``/schedules`` (periodic jobs)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.cron import CronDefinition, CronSpec, JobTemplate, Source


class ScheduleCreate(CronSpec):
    """A periodic schedule and the job each of its ticks creates."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "nightly-report",
                    "schedule": "0 30 2 * * *",
                    "timezone": "Europe/Berlin",
                    "job": {"type": "report", "payload": {"output": "reports/nightly.html"}},
                },
                {"name": "heartbeat", "schedule": "@every 30s", "job": {"type": "echo"}},
            ]
        },
    )


class ScheduleOut(BaseModel):
    """A stored schedule and when it fires next."""

    name: str
    schedule: str = Field(description="Canonical form: 6-field cron, @daily..., or @every.")
    timezone: str | None
    job: JobTemplate
    paused: bool
    source: Source
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = Field(
        description="Who last created, replaced, paused or resumed it (the caller's actor)."
    )
    next_fires: list[datetime] = Field(description="The next fire times (UTC); empty while paused.")

    @classmethod
    def of(cls, definition: CronDefinition, next_fires: list[datetime]) -> ScheduleOut:
        return cls(
            **definition.model_dump(exclude={"job"}), job=definition.job, next_fires=next_fires
        )


class ScheduleTriggered(BaseModel):
    """The one job a trigger-now created: in the event log, its ``submitted`` event naming
    the caller as actor."""

    schedule: str
    job_id: str
    queue: str
    type: str
    by: str = Field(description="The caller's actor, as the job's submitted event names it.")
    status_url: str
