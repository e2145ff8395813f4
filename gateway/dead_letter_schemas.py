"""Request and response models of ``/dead-letters``: list, inspect, redrive, purge."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ferrisqueue.domain.events import Token, UtcDatetime
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.store.models import DeadLetterRow
from ferrisqueue.store.queries import DeadLetterFilter
from gateway.dead_letter_ops import MAX_BATCH, DeadLetterMessage, Outcome

ReasonText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class DeadLetterOut(BaseModel):
    """A dead-lettered job, and what an operator did about it (if anything yet)."""

    job_id: str
    queue: str
    type: str
    reason: str = Field(description="Why it was dead-lettered.")
    last_error: str | None = Field(description="The error of its last attempt, if any.")
    attempts: int
    dead_lettered_at: datetime
    resolution: Literal["redriven", "purged"] | None = Field(
        description="null while the job is dead; listed only with include_resolved."
    )
    resolved_at: datetime | None
    resolved_by: str | None

    @classmethod
    def from_row(cls, row: DeadLetterRow) -> DeadLetterOut:
        return cls.model_validate(row.model_dump())


class DeadLetterPage(BaseModel):
    """One page of dead letters, newest first."""

    items: list[DeadLetterOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class DeadLetterSelection(BaseModel):
    """Which dead letters to act on; every field narrows the selection (none: all)."""

    model_config = ConfigDict(extra="forbid")

    queue: Token | None = None
    type: Token | None = None
    reason: ReasonText | None = Field(
        default=None,
        description="Case-insensitive substring of the reason or of the last error.",
    )
    since: UtcDatetime | None = Field(default=None, description="Dead-lettered at or after.")
    until: UtcDatetime | None = Field(default=None, description="Dead-lettered before.")

    def to_filter(self) -> DeadLetterFilter:
        return DeadLetterFilter(**self.model_dump())


class DeadLetterAction(BaseModel):
    """A redrive or purge of the listed jobs, or of the dead letters a filter selects."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"job_ids": ["0199..."], "reason": "bug fixed in v1.4"},
                {"filter": {"queue": "emails", "reason": "timeout"}},
            ]
        },
    )

    job_ids: list[Token] | None = Field(default=None, min_length=1, max_length=MAX_BATCH)
    filter: DeadLetterSelection | None = Field(
        default=None,
        description=f"Act on the newest {MAX_BATCH} unresolved dead letters it selects.",
    )
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] | None = (
        Field(default=None, description="Why, recorded in each event.")
    )

    @model_validator(mode="before")
    @classmethod
    def _no_claimed_actor(cls, data: Any) -> Any:
        # Who acts is the authenticated caller, recorded by the gateway: a body naming
        # someone is refused (422) rather than silently ignored, so no client believes it
        # was recorded.
        if isinstance(data, dict) and "by" in data:
            raise ValueError(
                "`by` is not accepted: the event records the authenticated caller as its "
                "actor; say why in `reason`"
            )
        return data

    @model_validator(mode="after")
    def _one_selection(self) -> DeadLetterAction:
        if (self.job_ids is None) == (self.filter is None):
            raise ValueError("give exactly one of job_ids or filter")
        return self


class JobOutcomeOut(BaseModel):
    """What the action did to one job."""

    job_id: str
    queue: str | None
    outcome: Literal["redriven", "purged", "skipped"]
    why: str | None = Field(description="Why it was skipped.")

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> JobOutcomeOut:
        return cls(
            job_id=outcome.job_id, queue=outcome.queue, outcome=outcome.outcome, why=outcome.why
        )


class DeadLetterActionResult(BaseModel):
    """Per job: done or skipped (with why). Jobs are decided on the event log, not the list."""

    action: Literal["redrive", "purge"]
    by: str = Field(description="The actor recorded in the events: the authenticated caller.")
    selected: int = Field(description="Jobs named or selected by the filter.")
    done: int
    skipped: int
    limit: int = Field(default=MAX_BATCH, description="The most jobs one call acts on.")
    more: bool = Field(
        description="The filter selects more than `limit` dead letters: call again for the rest."
    )
    results: list[JobOutcomeOut]


class DeadLetterMessageOut(BaseModel):
    """A job's message as ``FQ_DLQ`` keeps it."""

    subject: str
    seq: int
    stored_at: datetime
    lineage: dict[str, str] = Field(description="The Fq-* headers: reason and lineage.")
    headers: dict[str, str] = Field(description="Every header of the message.")
    body: Any = Field(description="The body parsed as JSON, or null when it is not JSON.")
    text: str = Field(description="The body as text (undecodable bytes replaced).")

    @classmethod
    def from_message(cls, message: DeadLetterMessage) -> DeadLetterMessageOut:
        try:
            body = json.loads(message.data)
        except ValueError:
            body = None
        return cls(
            subject=message.subject,
            seq=message.seq,
            stored_at=message.stored_at,
            lineage={k: v for k, v in message.headers.items() if k.startswith("Fq-")},
            headers=message.headers,
            body=body,
            text=message.data.decode("utf-8", errors="replace"),
        )


class DeadLetterDetail(BaseModel):
    """One dead letter: the kept message and the job's status now (folded from the log)."""

    job_id: str
    queue: str
    status: JobStatus | None = Field(description="null when the log holds no event of the job.")
    dead_lettered: bool
    attempts: int
    last_error: str | None
    message: DeadLetterMessageOut | None = Field(
        description="null when FQ_DLQ no longer holds it (a crash before its removal, or "
        "dead-lettered without a copy)."
    )

    @classmethod
    def build(
        cls, job_id: str, queue: str, state: JobState | None, message: DeadLetterMessage | None
    ) -> DeadLetterDetail:
        return cls(
            job_id=job_id,
            queue=queue,
            status=state.status if state else None,
            dead_lettered=state.dead_lettered if state else False,
            attempts=state.attempts if state else 0,
            last_error=state.last_error if state else None,
            message=DeadLetterMessageOut.from_message(message) if message else None,
        )
