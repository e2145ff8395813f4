"""The job builder: the one way a request for a job becomes the event that creates it.

Every producer goes through :func:`build_job`: ``POST /jobs``, each item of
``POST /jobs:batch``, ``fq submit --nats`` and the scheduler's cron ticks. Cron definitions
(``POST /schedules``, ``fq cron add``, ``FQ_CRON_FILE``) are checked by :func:`check_job`
when they are defined, so a schedule whose jobs could never run is refused then, not on
every tick. ``fq submit`` through the gateway checks the request's shape here and leaves
the contract to the gateway, whose installed job types decide what it accepts. A plain
``nats pub`` bypasses every producer; the worker checks its payload with
:func:`validate_payload` before the handler runs and fails the job permanently if it breaks
the contract.

What the builder guarantees, in one place:

* a request names at most one start time (``delay`` or ``run_at``, not both);
* the payload of a type with a contract (:mod:`ferrisqueue.jobtypes`, built-in or plugin)
  matches it; a type without one is accepted as it is, because a worker with a plugin this
  process lacks may know it;
* a job due later than ``now`` is created ``scheduled`` (the timer relay releases it then);
  one due now or in the past is ``submitted`` and runs at once;
* a job with parents (``depends_on``, no start time) is created ``awaiting``: the scheduler
  releases it once they all succeeded. That the parents exist is the caller's check (it
  needs the log: the gateway answers 422 for an unknown one).

Anything else is a :class:`JobRefused` with a reason a person can act on and, for callers
that answer field by field (the gateway's 422), pydantic-style errors located in the
request. Pure: no I/O, no clock (``now`` comes in), no randomness (the job id comes in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import (
    MAX_PARENTS,
    Awaiting,
    Priority,
    Scheduled,
    Submitted,
    Token,
    in_utc,
)
from ferrisqueue.domain.subjects import DEFAULT_PRIORITY
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.jobtypes import JobType

MAX_DELAY = 30_000_000
"""Longest ``delay`` in seconds (about a year), as for plain-NATS ``scheduled`` messages."""

BOTH_START_TIMES = "give run_at or delay, not both"

START_TIME_AND_PARENTS = (
    "a job with depends_on starts when its parents succeed: give no run_at or delay"
)


class JobRefused(FerrisQueueError):
    """A request the builder will not turn into a job.

    ``reason`` is one line for people (``payload.to: Field required``); ``errors`` are the
    same problems as pydantic reports them, each ``loc`` relative to the request (e.g.
    ``("payload", "to")``), so that an HTTP answer can place them in its body.
    """

    def __init__(self, reason: str, errors: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors: list[dict[str, Any]] = [dict(e) for e in errors]


class JobFields(BaseModel):
    """What every request for a job names: its type and input, its queue, and the job's own
    options, which override the queue's policy (``FQ_QUEUES``) for this one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Token = Field(description="The task that runs the job, e.g. 'echo' or 'report'.")
    queue: Token = Field(default="default", description="The queue whose workers run it.")
    payload: dict[str, Any] = Field(default_factory=dict, description="The task's input (JSON).")
    max_attempts: int | None = Field(
        default=None, ge=1, le=1000, description="Attempts before the job is dead-lettered."
    )
    timeout: float | None = Field(
        default=None, gt=0, le=7 * 86_400, description="Seconds one attempt may run."
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Backoff between attempts (default: the queue's)."
    )
    priority: Priority = DEFAULT_PRIORITY
    concurrency_key: Token | None = Field(
        default=None,
        description="Jobs of one key (e.g. a customer id) share the queue's per-key limits.",
    )


class JobRequest(JobFields):
    """A request for one job, to run now or later (``run_at`` or ``delay``, not both)."""

    run_at: Annotated[AwareDatetime, AfterValidator(in_utc)] | None = Field(
        default=None,
        description="Run at this time (with a timezone); a time already past runs it now.",
    )
    delay: float | None = Field(
        default=None, ge=0, le=MAX_DELAY, description="Run this many seconds from now."
    )
    depends_on: list[Token] = Field(
        default_factory=list,
        max_length=MAX_PARENTS,
        # Left out when empty: an idempotency key's fingerprint of a body without parents
        # stays what it was before the field existed.
        exclude_if=lambda parents: not parents,
        description="Ids of jobs that must succeed first: the job waits (pending: "
        "dependencies) and is canceled if one of them fails for good or is canceled.",
    )

    @model_validator(mode="after")
    def _one_start_time(self) -> JobRequest:
        if _both_start_times(self.run_at, self.delay):
            raise ValueError(BOTH_START_TIMES)
        if self.depends_on and (self.run_at is not None or self.delay is not None):
            raise ValueError(START_TIME_AND_PARENTS)
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on names a job twice")
        return self

    def due(self, now: datetime) -> datetime | None:
        """When the job should run, if that is after ``now`` (else it runs at once)."""
        due = now + timedelta(seconds=self.delay) if self.delay is not None else self.run_at
        return due.astimezone(UTC) if due is not None and due > now else None


def parse_request(fields: Mapping[str, Any]) -> JobRequest:
    """``fields`` (JSON-like: a CLI's options, ``run_at`` as ISO 8601 text or a datetime) as
    a :class:`JobRequest`; :class:`JobRefused` saying what is wrong."""
    # Two start times are refused before anything else: that is the producer's first
    # mistake to fix, whatever else is wrong with either value (the model's own check
    # runs only once every field is valid).
    if _both_start_times(fields.get("run_at"), fields.get("delay")):
        raise JobRefused(
            BOTH_START_TIMES,
            [{"type": "value_error", "loc": (), "msg": BOTH_START_TIMES, "input": dict(fields)}],
        )
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        raise _refused(exc.errors(include_url=False)) from exc


def validate_payload(
    job_types: Mapping[str, JobType], type_: str, payload: Mapping[str, Any]
) -> BaseModel | dict[str, Any]:
    """The payload as its handler takes it: the contract's model for a type with a contract,
    the plain dict for a type without one. :class:`JobRefused` (errors located under
    ``payload``) when it breaks the contract.

    The one contract check: producers reach it through :func:`build_job`, the worker calls
    it for messages no producer checked (a plain ``nats pub``)."""
    contract = job_types.get(type_)
    if contract is None:
        return dict(payload)
    try:
        return contract.payload.model_validate(payload)
    except ValidationError as exc:
        raise _refused(
            [{**e, "loc": ("payload", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


def check_job(
    request: JobFields | Mapping[str, Any], job_types: Mapping[str, JobType]
) -> JobFields:
    """The request, checked as :func:`build_job` checks it (shape, start time, contract),
    without making an event: for definitions of jobs to come, such as a cron schedule's."""
    checked = request if isinstance(request, JobFields) else parse_request(request)
    validate_payload(job_types, checked.type, checked.payload)
    return checked


def build_job(
    request: JobFields | Mapping[str, Any],
    job_types: Mapping[str, JobType],
    *,
    job_id: str,
    now: datetime,
    actor: str,
) -> Submitted | Scheduled | Awaiting:
    """The event that creates the job ``request`` asks for, stamped ``now``.

    ``awaiting`` when it names parents (``depends_on``), ``scheduled`` (with ``run_at``) when
    the request's start time lies after ``now``, else ``submitted``. A request without start
    times (:class:`JobFields`, e.g. a cron schedule's job) is always ``submitted``.
    :class:`JobRefused` when the request is malformed, names two start times (or one and
    parents), breaks its type's contract, or its id or ``actor`` (who submits it) cannot be
    stored.
    """
    checked = check_job(request, job_types)
    run_at = checked.due(now) if isinstance(checked, JobRequest) else None
    fields = checked.model_dump(include=set(JobFields.model_fields))
    fields.update(job_id=job_id, at=now, actor=actor)
    parents = checked.depends_on if isinstance(checked, JobRequest) else []
    try:
        if parents:
            return Awaiting(**fields, depends_on=parents)
        return Submitted(**fields) if run_at is None else Scheduled(**fields, run_at=run_at)
    except ValidationError as exc:
        raise _refused(exc.errors(include_url=False)) from exc


def _both_start_times(run_at: object, delay: object) -> bool:
    return run_at is not None and delay is not None


def _refused(errors: Sequence[Mapping[str, Any]]) -> JobRefused:
    """One :class:`JobRefused` for pydantic's ``errors``, with a one-line reason."""
    parts = []
    for error in errors:
        location = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return JobRefused("; ".join(parts) or "invalid job request", errors)
