"""The job builder: every producer's request, as a row of what it becomes.

Each row is one path's case (single, batch item, ``fq submit --nats``, a cron schedule's job
on a tick or when defined) with the request as that path hands it over, and either the
creation event the builder makes or the reason it refuses. Pure and clock-free like the
fold: ``now`` is fixed. Every event the builder makes is one the fold accepts as a job's
creation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from ferrisqueue.domain.cron import CronSpec
from ferrisqueue.domain.events import Scheduled, Submitted
from ferrisqueue.domain.fold import apply
from ferrisqueue.domain.jobbuilder import (
    BOTH_START_TIMES,
    JobFields,
    JobRefused,
    JobRequest,
    build_job,
    check_job,
    parse_request,
    validate_payload,
)
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.jobtypes import JobType, builtin_job_types
from gateway.routes.batch import BatchJobCreate
from gateway.schemas import JobCreate

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
JOB_ID = "0190b6d2-0000-7000-8000-000000000000"
PLUGIN_CONTRACT = (
    Path(__file__).resolve().parents[2]
    / "examples/ferrisqueue-example-plugin/src/fq_example_plugin/contract.py"
)
EMAIL = {"to": ["a@example.com"], "subject_template": "Hi", "text_template": "Hello"}


def example_plugin_type() -> JobType:
    """The example plugin's ``word_count`` contract, loaded from its source as its entry
    point would load it (installing the plugin is the integration suite's business)."""
    spec = importlib.util.spec_from_file_location("fq_example_plugin_contract", PLUGIN_CONTRACT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    job_type: JobType = module.JOB_TYPE
    return job_type


JOB_TYPES = {t.name: t for t in [*builtin_job_types(), example_plugin_type()]}


@dataclass(frozen=True)
class Made:
    """The event a request becomes: its kind, and the fields that matter for the row."""

    kind: type[Submitted] | type[Scheduled]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refused:
    """The request is refused; the reason contains ``reason`` and the first error sits at
    ``loc`` (relative to the request)."""

    reason: str
    loc: tuple[Any, ...] | None = None


def tick_template(**job: Any) -> JobFields:
    """A cron schedule's job, as a definition holds it."""
    return CronSpec.model_validate({"name": "nightly", "schedule": "@hourly", "job": job}).job


ROWS: dict[str, tuple[Any, Made | Refused]] = {
    # --- single submit (POST /jobs, a validated body) -----------------------------------
    "single now is submitted with every option": (
        JobCreate(
            type="echo",
            payload={"a": 1},
            queue="mail",
            max_attempts=3,
            timeout=9.5,
            retry={"base": 2, "cap": 60},  # type: ignore[arg-type]
        ),
        Made(Submitted, {"queue": "mail", "payload": {"a": 1}, "max_attempts": 3, "timeout": 9.5}),
    ),
    "single with a delay ahead is scheduled that long from now": (
        JobCreate(type="echo", delay=30),
        Made(Scheduled, {"run_at": NOW + timedelta(seconds=30)}),
    ),
    "single with run_at ahead in any timezone is scheduled then, in UTC": (
        JobCreate(
            type="echo", run_at=datetime(2026, 11, 28, 7, 30, tzinfo=timezone(timedelta(hours=2)))
        ),
        Made(Scheduled, {"run_at": NOW + timedelta(minutes=30)}),
    ),
    "single with a zero delay runs at once": (JobCreate(type="echo", delay=0), Made(Submitted)),
    "single with run_at now runs at once": (JobCreate(type="echo", run_at=NOW), Made(Submitted)),
    "single with run_at in the past runs at once": (
        JobCreate(type="echo", run_at=NOW - timedelta(days=1)),
        Made(Submitted),
    ),
    "unknown type is accepted without a contract check": (
        JobCreate(type="made_up", payload={"anything": [1, 2]}),
        Made(Submitted, {"type": "made_up", "payload": {"anything": [1, 2]}}),
    ),
    "builtin payload breaking its contract is refused at the field": (
        JobCreate(type="email", payload={"to": "nope"}),
        Refused("payload.to: Input should be a valid list", ("payload", "to")),
    ),
    "builtin payload keeping its contract is submitted as given": (
        JobCreate(type="email", payload=EMAIL),
        Made(Submitted, {"type": "email", "payload": EMAIL}),
    ),
    "plugin payload breaking its contract is refused at the field": (
        JobCreate(type="word_count", payload={"text": "a b", "min_length": 0}),
        Refused("payload.min_length: Input should be greater than or equal to 1"),
    ),
    "plugin payload keeping its contract is submitted": (
        JobCreate(type="word_count", payload={"text": "a b"}),
        Made(Submitted, {"type": "word_count"}),
    ),
    # --- batch item: the same builder, the key is no part of the job --------------------
    "batch item with a key and a delay is scheduled": (
        BatchJobCreate(type="echo", delay=5, idempotency_key="k-1"),
        Made(Scheduled, {"run_at": NOW + timedelta(seconds=5)}),
    ),
    "batch item breaking a plugin contract is refused": (
        BatchJobCreate(type="word_count", payload={}, idempotency_key="k-2"),
        Refused("payload.text: Field required", ("payload", "text")),
    ),
    # --- fq submit (--nats): options as JSON-like fields --------------------------------
    "cli fields with run_at as ISO text are scheduled": (
        {"type": "echo", "run_at": "2026-11-28T06:00:00Z", "delay": None, "max_attempts": 4},
        Made(Scheduled, {"run_at": NOW + timedelta(hours=1), "max_attempts": 4}),
    ),
    "cli fields with both delay and run_at are refused": (
        {"type": "echo", "delay": 1, "run_at": "2030-01-01T00:00:00Z"},
        Refused(BOTH_START_TIMES, ()),
    ),
    "cli fields with both start times are refused first, whatever else is wrong": (
        {"type": "echo", "delay": 1, "run_at": "x"},
        Refused(BOTH_START_TIMES),
    ),
    "cli fields with run_at lacking a timezone are refused": (
        {"type": "echo", "run_at": "2030-01-01T00:00:00"},
        Refused("run_at: Input should have timezone info", ("run_at",)),
    ),
    "cli fields with a type that is no token are refused": (
        {"type": "not a token"},
        Refused("type: must be 1-64 characters", ("type",)),
    ),
    "cli fields with an unknown option are refused": (
        {"type": "echo", "urgency": 3},
        Refused("urgency: Extra inputs are not permitted", ("urgency",)),
    ),
    "cli fields with zero attempts are refused": (
        {"type": "echo", "max_attempts": 0},
        Refused("max_attempts: Input should be greater than or equal to 1"),
    ),
    "cli fields breaking a contract are refused": (
        {"type": "cleanup", "payload": {}},
        Refused("payload.older_than_seconds: Field required", ("payload", "older_than_seconds")),
    ),
    # --- cron tick: a definition's job, which has no start time -------------------------
    "cron tick is submitted at the tick's time with all the job's options": (
        tick_template(type="echo", queue="mail", payload={"a": 1}, max_attempts=4, timeout=9.5),
        Made(Submitted, {"queue": "mail", "payload": {"a": 1}, "max_attempts": 4}),
    ),
    "cron tick of a job breaking its contract is refused": (
        tick_template(type="cleanup", payload={"older_than_seconds": -1}),
        Refused("payload.older_than_seconds: Input should be greater than or equal to 0"),
    ),
}


@pytest.mark.parametrize(("request_", "expected"), list(ROWS.values()), ids=list(ROWS))
def test_each_path_request_becomes_its_creation_event_or_a_refusal(
    request_: Any, expected: Made | Refused
) -> None:
    def build() -> Submitted | Scheduled:
        return build_job(request_, JOB_TYPES, job_id=JOB_ID, now=NOW, actor="someone")

    if isinstance(expected, Refused):
        with pytest.raises(JobRefused) as refused:
            build()
        assert expected.reason in refused.value.reason
        assert str(refused.value) == refused.value.reason
        if expected.loc is not None:
            assert refused.value.errors[0]["loc"] == expected.loc
        return
    event = build()
    assert type(event) is expected.kind
    assert (event.job_id, event.at, event.actor) == (JOB_ID, NOW, "someone")
    for name, value in expected.fields.items():
        assert getattr(event, name) == value, name
    if isinstance(event, Scheduled):
        assert event.run_at.tzinfo is UTC
    # The fold takes it as the job's creation: pending, queued or scheduled as built.
    state = apply(None, event).state
    assert state is not None and state.status is JobStatus.PENDING
    scheduled = isinstance(event, Scheduled)
    assert state.pending_reason is (PendingReason.SCHEDULED if scheduled else PendingReason.QUEUED)


def test_every_refusal_is_a_job_refused_with_errors_for_field_by_field_answers() -> None:
    with pytest.raises(JobRefused) as refused:
        build_job(
            {"type": "email", "payload": {}}, JOB_TYPES, job_id=JOB_ID, now=NOW, actor="someone"
        )

    locs = [error["loc"] for error in refused.value.errors]
    assert locs == [
        ("payload", "to"),
        ("payload", "subject_template"),
        ("payload", "text_template"),
    ]
    assert refused.value.reason == (
        "payload.to: Field required; payload.subject_template: Field required; "
        "payload.text_template: Field required"
    )


@pytest.mark.parametrize(
    ("job_id", "actor", "reason"),
    [
        ("no spaces please", "someone", "job_id: must be 1-64 characters"),
        (JOB_ID, "x" * 201, "actor: String should have at most 200 characters"),
    ],
    ids=["bad-job-id", "overlong-actor"],
)
def test_an_id_or_actor_the_log_cannot_store_is_refused(
    job_id: str, actor: str, reason: str
) -> None:
    with pytest.raises(JobRefused, match=reason):
        build_job({"type": "echo"}, JOB_TYPES, job_id=job_id, now=NOW, actor=actor)


def test_the_builder_is_pure_the_same_request_makes_the_same_event() -> None:
    request = JobCreate(type="echo", payload={"n": 1}, delay=3)

    first = build_job(request, JOB_TYPES, job_id=JOB_ID, now=NOW, actor="a")
    again = build_job(request, JOB_TYPES, job_id=JOB_ID, now=NOW, actor="a")

    assert first == again


def test_a_job_without_start_times_is_never_scheduled() -> None:
    template = JobFields(type="echo")

    event = build_job(template, JOB_TYPES, job_id=JOB_ID, now=NOW, actor="cron:x")

    assert isinstance(event, Submitted)


def test_check_job_refuses_a_definition_whose_jobs_could_never_run() -> None:
    assert check_job(JobFields(type="made_up", payload={"x": 1}), JOB_TYPES).type == "made_up"
    with pytest.raises(JobRefused, match=r"payload\.text: Field required"):
        check_job(JobFields(type="word_count"), JOB_TYPES)


def test_validate_payload_gives_the_contract_model_or_the_plain_dict() -> None:
    model = validate_payload(JOB_TYPES, "word_count", {"text": "a b"})
    plain = validate_payload(JOB_TYPES, "made_up", {"text": "a b"})

    assert isinstance(model, BaseModel) and model.model_dump()["text"] == "a b"
    assert plain == {"text": "a b"}


def test_parse_request_gives_the_request_a_gateway_would_take() -> None:
    parsed = parse_request({"type": "echo", "run_at": "2030-01-01T09:00Z", "delay": None})

    assert isinstance(parsed, JobRequest)
    assert parsed.run_at == datetime(2030, 1, 1, 9, tzinfo=UTC)
    assert JobCreate.model_validate(parsed.model_dump(mode="json", exclude_none=True)) is not None
