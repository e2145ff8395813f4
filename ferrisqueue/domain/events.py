"""The event contract: every lifecycle event of a job, as it is stored in JetStream.

Events are pydantic models serialised as JSON. Each carries ``schema_version``; a reader
refuses an event written by a newer schema instead of guessing at it. Producers that speak
plain NATS may leave out ``job_id``, ``queue``, ``event`` and ``at``: the first three are
taken from the subject and ``at`` from the time JetStream stored the message.

Every event names its ``actor`` (see "Actors" in docs/architecture.md and docs/security.md):
``key:<name>`` (the gateway's authenticated caller), ``worker:<id>``, ``scheduler``,
``cron:<schedule>``, ``cli:<user>@<host>``, ``system``. The log is permanent, so older shapes
still read: the who-fields of schema 1 (``submitted_by``, ``requested_by``, ``redriven_by``,
``purged_by``) become ``claimed:<value>`` (nobody verified them), a schema-1 ``started``
names ``worker:<worker>``. A plain-NATS producer that names no actor is ``nats:anonymous``,
or ``claimed:<value>`` when it sent an ``Fq-Actor`` header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.subjects import (
    DEFAULT_PRIORITY,
    RUNNABLE_EVENTS,
    job_subject,
    parse_job_subject,
    runnable_token,
    split_event_token,
)
from ferrisqueue.errors import DecodeError

SCHEMA_VERSION = 2
"""The newest event schema this code writes and understands (2: ``actor`` on every event)."""

ACTOR_HEADER = "Fq-Actor"
"""The header a plain-NATS producer may name itself in; recorded as ``claimed:<value>``."""

ANONYMOUS_PRODUCER = "nats:anonymous"
"""The actor of a plain-NATS message that names none."""

SCHEDULER_ACTOR = "scheduler"
"""The actor of the scheduler's events: releases and dead-lettering."""

SYSTEM_ACTOR = "system"
"""The actor of an event whose producer did not name one (see :func:`encode_event`)."""

_LEGACY_ACTOR_FIELDS = ("submitted_by", "requested_by", "redriven_by", "purged_by")
"""Schema 1's who-fields, each on one kind of event; read into ``actor`` as claims."""

_MAX_ACTOR = 200

MAX_PARENTS = 100
"""Most jobs one job may depend on (``depends_on``)."""


class EventKind(StrEnum):
    """The kinds of lifecycle event; each is the last token of its subject."""

    SUBMITTED = "submitted"
    SCHEDULED = "scheduled"
    RELEASED = "released"
    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELED = "canceled"
    REDRIVEN = "redriven"
    PURGED = "purged"
    AWAITING = "awaiting"
    DEPENDENT = "dependent"
    SETTLED = "settled"
    THROTTLED = "throttled"


def _token(value: str) -> str:
    if not is_token(value):
        raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return value


def in_utc(value: datetime) -> datetime:
    """An aware ``value`` in UTC; ``ValueError`` when UTC cannot hold it. (A validator:
    0001-01-01T00:00+01:00 is year 0 in UTC, and the OverflowError that would raise is no
    error pydantic reports, so it became a 500 or an item retried for ever.)"""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
    return in_utc(value)


Token = Annotated[
    str,
    AfterValidator(_token),
    # The same rule in the JSON schema (the OpenAPI document), so clients see it; the
    # validator keeps its own, friendlier message.
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}),
]
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Priority = Annotated[
    int,
    Field(
        ge=0,
        le=9,
        # Left out when it is the default, so a job without one is stored as it was before.
        exclude_if=lambda priority: priority == DEFAULT_PRIORITY,
        description="0-9, higher runs first (strict priority); also the runnable event's lane.",
    ),
]


def utcnow() -> datetime:
    """The current time in UTC; the one clock the edges use to stamp events."""
    return datetime.now(UTC)


def claimed_actor(value: str) -> str:
    """An identity nobody verified, as recorded: ``claimed:<value>`` (cut to fit)."""
    return f"claimed:{value.strip()}"[:_MAX_ACTOR]


def worker_actor(worker_id: str) -> str:
    """The actor of the events a worker writes."""
    return f"worker:{worker_id}"


def cron_actor(schedule: str) -> str:
    """The actor of the jobs a schedule creates."""
    return f"cron:{schedule}"


class BaseEvent(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    job_id: Token
    queue: Token
    at: UtcDatetime = Field(description="When the event happened, by the producer's clock.")
    actor: str | None = Field(
        default=None,
        min_length=1,
        max_length=_MAX_ACTOR,
        description="Who made the event happen: key:<name>, worker:<id>, scheduler, "
        "cron:<schedule>, cli:<user>@<host>, nats:anonymous, claimed:<value> or system.",
    )

    @property
    def kind(self) -> EventKind:
        return EventKind(self.event)

    @property
    def subject(self) -> str:
        """The subject this event is published on: a runnable event in its priority's lane."""
        priority = getattr(self, "priority", None)
        if priority is None or self.event not in RUNNABLE_EVENTS:
            return job_subject(self.queue, self.job_id, self.event)
        return job_subject(self.queue, self.job_id, runnable_token(self.event, priority))

    def dedup_key(self) -> str:
        """The ``Nats-Msg-Id``: publishing the same event twice stores it once."""
        attempt = getattr(self, "attempt", None)
        suffix = attempt if attempt is not None else int(self.at.timestamp() * 1_000_000)
        return f"{self.job_id}:{self.event}:{suffix}"


class JobSpec(BaseEvent):
    """What a job is: the fields of the event that creates it (``submitted``/``scheduled``).

    The options override the queue's policy (``FQ_QUEUES``) for this one job.
    """

    type: Token = Field(description="The task that runs the job, e.g. 'email' or 'echo'.")
    payload: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int | None = Field(
        default=None, ge=1, le=1000, description="Attempts before the job is dead-lettered."
    )
    timeout: float | None = Field(
        default=None, gt=0, le=7 * 86_400, description="Seconds one attempt may run."
    )
    retry: RetryPolicy | None = Field(default=None, description="Backoff between attempts.")
    priority: Priority = DEFAULT_PRIORITY
    depends_on: list[Token] = Field(
        default_factory=list,
        max_length=MAX_PARENTS,
        # Left out when empty, so a job without parents is stored as it was before.
        exclude_if=lambda parents: not parents,
        description="Jobs that must succeed before this one runs (an 'awaiting' job).",
    )

    @model_validator(mode="after")
    def _parents_only_when_awaiting(self) -> JobSpec:
        # Only a non-runnable creation may wait for parents: a ``submitted`` job would be
        # delivered to a worker at once (see "Job dependencies" in docs/architecture.md).
        if self.depends_on and self.event != EventKind.AWAITING:
            raise ValueError(
                f"depends_on: a job with parents is created by an 'awaiting' event, "
                f"not '{self.event}'"
            )
        if self.event == EventKind.AWAITING and not self.depends_on:
            raise ValueError("depends_on: an 'awaiting' job names at least one parent")
        if self.job_id in self.depends_on:
            raise ValueError("depends_on: a job cannot depend on itself")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on: a parent is named twice")
        return self

    concurrency_key: Token | None = Field(
        default=None, description="Jobs of one key share the queue's per-key limits."
    )

    def dedup_key(self) -> str:
        # A job is created once: a retried publish of the same creation is stored once.
        return f"{self.job_id}:{self.event}"


class Submitted(JobSpec):
    """A producer asked for a job to run now."""

    event: Literal["submitted"] = "submitted"


class Scheduled(JobSpec):
    """A producer asked for a job to run at ``run_at``; it waits until then.

    Plain-NATS producers may give ``delay`` (seconds) instead of ``run_at``: the job then
    runs that long after the message was stored.
    """

    event: Literal["scheduled"] = "scheduled"
    run_at: UtcDatetime


class Awaiting(JobSpec):
    """A producer asked for a job to run once every job in ``depends_on`` has succeeded; it
    waits until the scheduler releases it (or cancels it, when a parent fails for good or is
    canceled)."""

    event: Literal["awaiting"] = "awaiting"


class Dependent(BaseEvent):
    """A note on a parent job (its ``job_id``): the job ``child`` waits for it. Written by the
    scheduler, so that the parent's own history says whom to wake when it finishes; it does
    not change the parent's state."""

    event: Literal["dependent"] = "dependent"
    child: Token

    def dedup_key(self) -> str:
        # One note per (parent, child): the scheduler repeats it after a crash.
        return f"{self.job_id}:dependent:{self.child}"


class Settled(BaseEvent):
    """A note on a job that ended (succeeded, failed for good, was dead-lettered or canceled)
    while children waited for it (its history holds ``dependent`` notes): the scheduler's
    dependency gate decides them. Written by whoever recorded the end, once it knew of the
    notes, so the gate reads only these, not every job's end; it does not change the job's
    state."""

    event: Literal["settled"] = "settled"

    def dedup_key(self) -> str:
        # One per job: whoever repeats it (a redelivery, a retry) repeats the same note.
        return f"{self.job_id}:settled"


class Released(BaseEvent):
    """A waiting job (scheduled, retrying, redriven or awaiting its parents) became runnable."""

    event: Literal["released"] = "released"
    attempt: int = Field(default=0, ge=0, description="The attempts made before the release.")
    priority: Priority = DEFAULT_PRIORITY

    def dedup_key(self) -> str:
        # A job can be released more than once at the same attempt count (redriven twice),
        # so the key carries the time, not only the attempt.
        return f"{self.job_id}:released:{self.attempt}:{int(self.at.timestamp() * 1_000_000)}"


class Started(BaseEvent):
    """A worker took the job; ``attempt`` counts deliveries from 1."""

    event: Literal["started"] = "started"
    attempt: int = Field(ge=1)
    worker: str
    trigger_seq: int | None = Field(
        default=None,
        ge=1,
        description="Stream sequence of the runnable message this attempt runs: when the "
        "same message is delivered again, the attempt it started was lost.",
    )


class Progress(BaseEvent):
    """A running handler reported how far it got."""

    event: Literal["progress"] = "progress"
    attempt: int = Field(ge=1)
    fraction: float = Field(ge=0.0, le=1.0)
    message: str | None = None

    def dedup_key(self) -> str:
        return f"{self.job_id}:progress:{self.attempt}:{int(self.at.timestamp() * 1_000_000)}"


class Succeeded(BaseEvent):
    """The handler returned; ``result`` is what it returned (JSON)."""

    event: Literal["succeeded"] = "succeeded"
    attempt: int = Field(ge=1)
    result: Any = None
    duration_ms: float = Field(ge=0.0)


class Failed(BaseEvent):
    """The handler raised. With ``retry_at`` the job will run again; without, it is over."""

    event: Literal["failed"] = "failed"
    attempt: int = Field(ge=1)
    error: str
    error_type: str
    retry_at: UtcDatetime | None = None
    duration_ms: float | None = Field(default=None, ge=0.0)


class DeadLettered(BaseEvent):
    """The job was moved to the dead-letter stream; it is failed for good until redriven."""

    event: Literal["dead_lettered"] = "dead_lettered"
    reason: str


class CancelRequested(BaseEvent):
    """Someone asked for the job to be canceled."""

    event: Literal["cancel_requested"] = "cancel_requested"


class Canceled(BaseEvent):
    """The job was canceled and will not run (again)."""

    event: Literal["canceled"] = "canceled"
    reason: str | None = None

    def dedup_key(self) -> str:
        # A job is canceled once: the gateway and a worker may both record it.
        return f"{self.job_id}:canceled"


class Redriven(BaseEvent):
    """An operator sent a dead-lettered job back to its queue: it runs again at once, with
    a fresh budget of attempts."""

    event: Literal["redriven"] = "redriven"
    attempt: int = Field(default=0, ge=0, description="The attempts made before the redrive.")
    priority: Priority = DEFAULT_PRIORITY
    reason: str | None = Field(default=None, max_length=1000)

    def dedup_key(self) -> str:
        return f"{self.job_id}:redriven:{self.attempt}:{int(self.at.timestamp() * 1_000_000)}"


class Purged(BaseEvent):
    """An operator removed the job's dead letter: it stays failed and will not run again."""

    event: Literal["purged"] = "purged"
    reason: str | None = Field(default=None, max_length=1000)

    def dedup_key(self) -> str:
        # Purged, redriven, dead-lettered and purged again: each purge is its own event.
        return f"{self.job_id}:purged:{int(self.at.timestamp() * 1_000_000)}"


class Throttled(BaseEvent):
    """A worker holds the delivered job until its queue's limits let it start: a free
    concurrency slot (``reason`` ``concurrency``) or the start rate (``rate_limited``).
    Recorded once per wait, so the job's history says why it waited."""

    event: Literal["throttled"] = "throttled"
    attempt: int = Field(ge=1, description="The attempt that waits.")
    reason: Literal["concurrency", "rate_limited"]
    detail: str = Field(max_length=500, description="Which limit, e.g. 'key acme: 2 of 2'.")

    def dedup_key(self) -> str:
        # One wait per reason and attempt: a retried publish is stored once.
        return f"{self.job_id}:throttled:{self.attempt}:{self.reason}"


Event = Annotated[
    Submitted
    | Scheduled
    | Released
    | Started
    | Progress
    | Succeeded
    | Failed
    | DeadLettered
    | CancelRequested
    | Canceled
    | Redriven
    | Purged
    | Awaiting
    | Dependent
    | Settled
    | Throttled,
    Field(discriminator="event"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def encode_event(event: BaseEvent) -> bytes:
    """The JSON body of an event as it is stored. Every event FerrisQueue writes names its
    actor: one its producer left unnamed is stored as ``system``, never without."""
    if event.actor is None:
        event = event.model_copy(update={"actor": SYSTEM_ACTOR})
    return event.model_dump_json(exclude_none=True).encode()


def decode_event(
    subject: str,
    data: bytes,
    *,
    stored_at: datetime | None = None,
    headers: Mapping[str, str] | None = None,
) -> Event:
    """Decode one stored message into an event.

    ``stored_at`` (the JetStream timestamp) stands in for ``at`` when the producer left it out.
    A message of the current schema that names no actor was published by a plain-NATS
    producer: its actor is ``claimed:<Fq-Actor header>``, or ``nats:anonymous`` without one
    (a schema-1 event keeps what it had: nothing, when it named nobody).
    Raises :class:`DecodeError` with a reason a person can act on.
    """
    event = _decode(subject, data, stored_at)
    if event.actor is not None:
        return event
    if event.schema_version < SCHEMA_VERSION:
        # Schema 1 named nobody on most events; its ``started`` named the worker.
        if isinstance(event, Started):
            return event.model_copy(update={"actor": worker_actor(event.worker)[:_MAX_ACTOR]})
        return event
    claim = (headers or {}).get(ACTOR_HEADER, "").strip()
    actor = claimed_actor(claim) if claim else ANONYMOUS_PRODUCER
    return event.model_copy(update={"actor": actor})


def _decode(subject: str, data: bytes, stored_at: datetime | None) -> Event:
    # The fast path: a complete body, as FerrisQueue itself writes it, validated straight
    # from the bytes; the subject must name what the body does (whose tokens were just
    # validated). Anything else (a plain-NATS producer's short body, or an error to
    # describe) takes the lenient path below.
    try:
        event = _EVENT_ADAPTER.validate_json(data)
    except ValidationError:
        pass
    else:
        if subject == event.subject:
            return event
    try:
        tokens = parse_job_subject(subject)
    except ValueError as exc:
        raise DecodeError(str(exc), subject=subject, data=data) from exc
    try:
        body = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser goes ([[[[...) is poison too.
        raise DecodeError(f"body is not JSON: {exc}", subject=subject, data=data) from exc
    if not isinstance(body, dict):
        raise DecodeError("body must be a JSON object", subject=subject, data=data)
    kind, lane = split_event_token(tokens.event)
    given_by_subject: list[tuple[str, object]] = [
        ("queue", tokens.queue),
        ("job_id", tokens.job_id),
        ("event", kind),
    ]
    if lane is not None:  # a runnable event: the subject names its lane
        given_by_subject.append(("priority", lane))
    for field, from_subject in given_by_subject:
        given = body.setdefault(field, from_subject)
        if given != from_subject:
            raise DecodeError(
                f"{field} {given!r} in the body contradicts {from_subject!r} in the subject",
                subject=subject,
                data=data,
            )
    _read_older_who_fields(body)
    if "at" not in body and stored_at is not None:
        body["at"] = stored_at
    if kind == EventKind.SCHEDULED and "delay" in body and "run_at" not in body:
        body["run_at"] = _delayed(body.pop("delay"), body.get("at"), subject, data)
    version = body.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise DecodeError(
            f"schema_version {version} is newer than this FerrisQueue understands "
            f"({SCHEMA_VERSION}); upgrade the reader",
            subject=subject,
            data=data,
        )
    try:
        return _EVENT_ADAPTER.validate_python(body)
    except ValidationError as exc:
        raise DecodeError(_describe(exc), subject=subject, data=data) from exc


def _read_older_who_fields(body: dict[str, Any]) -> None:
    """Schema 1 named the actor in a field per kind (``submitted_by``, ...), unverified: move
    it into ``actor`` as a claim (an ``actor`` given beside it wins). Plain-NATS producers
    that still send such a field are read the same way."""
    # Only text or null, as schema 1 had them: anything else stays in the body and makes
    # it undecodable, as it did then.
    legacy = [n for n in _LEGACY_ACTOR_FIELDS if isinstance(body.get(n, 0), str | None)]
    claims = [body.pop(name) for name in legacy if name in body]
    if body.get("actor") is None and (claim := next((c for c in claims if c), None)):
        body["actor"] = claimed_actor(claim)


def _delayed(delay: object, at: object, subject: str, data: bytes) -> datetime:
    """``run_at`` of a plain-NATS ``scheduled`` message that gave ``delay`` seconds."""
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 3e7:
        raise DecodeError(
            "delay must be a number of seconds from 0 to 30000000", subject=subject, data=data
        )
    try:
        start = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
        return start + timedelta(seconds=delay)
    except (ValueError, OverflowError) as exc:  # OverflowError: past year 9999
        raise DecodeError(f"at: {exc}", subject=subject, data=data) from exc


def _describe(exc: ValidationError) -> str:
    """A one-line, human reason from a pydantic error: 'payload: Input should be ...; ...'."""
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in error["loc"][1:] or error["loc"])
        parts.append(f"{location}: {error['msg']}" if location else error["msg"])
    return "; ".join(parts)
