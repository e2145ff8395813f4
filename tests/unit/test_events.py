"""The event contract (encode/decode, dedup keys), the subject scheme, job ids and settings."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.domain.events import (
    SCHEMA_VERSION,
    Awaiting,
    BaseEvent,
    Canceled,
    CancelRequested,
    DeadLettered,
    Dependent,
    EventKind,
    Failed,
    Progress,
    Purged,
    Redriven,
    Released,
    Scheduled,
    Settled,
    Started,
    Submitted,
    Succeeded,
    Throttled,
    decode_event,
    encode_event,
)
from ferrisqueue.domain.ids import is_token, new_job_id
from ferrisqueue.domain.subjects import (
    JobSubject,
    job_history_filter,
    job_subject,
    parse_job_subject,
    runnable_filters,
)
from ferrisqueue.errors import DecodeError, FerrisQueueError
from ferrisqueue.settings import DEFAULT_EMBEDDED_NATS_PORT, Settings

JOB = "0190f3a2-7b1c-7d4e-8f00-123456789abc"
QUEUE = "emails"
AT = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
STORED_AT = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
COMMON = {"job_id": JOB, "queue": QUEUE, "at": AT}

EVERY_EVENT: list[BaseEvent] = [
    Submitted(
        **COMMON,
        actor="key:alice",
        type="email",
        payload={"to": "a@example.com", "n": [1, 2.5, None, {"deep": True}]},
    ),
    Submitted(**COMMON, actor="key:ops", type="echo"),
    Scheduled(**COMMON, actor="key:ops", type="report", run_at=AT + timedelta(hours=2)),
    Submitted(
        **COMMON,
        actor="key:ops",
        type="email",
        max_attempts=7,
        timeout=30.0,
        retry=RetryPolicy(base=2.0, cap=60.0, jitter=0.1),
    ),
    Released(**COMMON, actor="scheduler"),
    Released(**COMMON, actor="scheduler", attempt=3),
    Started(**COMMON, actor="worker:host-1234", attempt=1, worker="host-1234"),
    Progress(**COMMON, actor="worker:host-1234", attempt=2, fraction=0.25, message="a quarter"),
    Progress(**COMMON, actor="worker:host-1234", attempt=1, fraction=1.0),
    Succeeded(
        **COMMON, actor="worker:host-1234", attempt=1, result={"sent": True}, duration_ms=12.5
    ),
    Succeeded(**COMMON, actor="worker:host-1234", attempt=1, duration_ms=0.0),
    Failed(
        **COMMON,
        actor="worker:host-1234",
        attempt=1,
        error="boom",
        error_type="RuntimeError",
        retry_at=AT + timedelta(seconds=30),
        duration_ms=3.0,
    ),
    Failed(**COMMON, actor="worker:host-1234", attempt=5, error="boom", error_type="RuntimeError"),
    DeadLettered(**COMMON, actor="scheduler", reason="max deliveries reached"),
    CancelRequested(**COMMON, actor="key:ops"),
    CancelRequested(**COMMON, actor="cli:ops@laptop"),
    Canceled(**COMMON, actor="key:ops", reason="no longer needed"),
    Redriven(**COMMON, actor="key:ops", attempt=3, reason="smtp fixed"),
    Purged(**COMMON, actor="key:ops"),
    Awaiting(**COMMON, actor="key:ops", type="echo", depends_on=["parent-1", "parent-2"]),
    Dependent(**COMMON, actor="scheduler", child="child-1"),
    Settled(**COMMON, actor="worker:w1"),
    Throttled(
        **COMMON, actor="worker:w1", attempt=1, reason="concurrency", detail="key acme: 2 of 2"
    ),
]


def _id(event: BaseEvent) -> str:
    return f"{event.event}-{len(event.model_dump(exclude_none=True))}"


def test_every_event_kind_is_covered() -> None:
    assert {e.kind for e in EVERY_EVENT} == set(EventKind)


# --- Round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", EVERY_EVENT, ids=_id)
def test_round_trip(event: BaseEvent) -> None:
    data = encode_event(event)

    decoded = decode_event(event.subject, data)

    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.at.tzinfo is not None and decoded.at.utcoffset() == timedelta(0)
    # the body describes itself: it repeats what the subject says
    body = json.loads(data)
    assert (body["job_id"], body["queue"], body["event"]) == (JOB, QUEUE, event.event)
    assert body["schema_version"] == SCHEMA_VERSION
    assert None not in body.values()  # absent optional fields are left out, not null


@pytest.mark.parametrize("event", EVERY_EVENT, ids=_id)
def test_subject_of_an_event(event: BaseEvent) -> None:
    assert event.subject == f"fq.job.{QUEUE}.{JOB}.{event.event}"
    assert parse_job_subject(event.subject) == JobSubject(QUEUE, JOB, event.event)


def test_a_raw_body_takes_ids_and_kind_from_the_subject_and_at_from_stored_at() -> None:
    subject = job_subject(QUEUE, JOB, "submitted")

    event = decode_event(subject, b'{"type": "echo", "payload": {"x": 1}}', stored_at=STORED_AT)

    assert isinstance(event, Submitted)
    assert (event.job_id, event.queue, event.event) == (JOB, QUEUE, "submitted")
    assert event.at == STORED_AT
    assert event.payload == {"x": 1}
    assert event.schema_version == SCHEMA_VERSION


def test_an_empty_body_is_enough_for_an_event_without_required_fields() -> None:
    event = decode_event(job_subject(QUEUE, JOB, "canceled"), b"", stored_at=STORED_AT)

    assert event == Canceled(job_id=JOB, queue=QUEUE, at=STORED_AT, actor="nats:anonymous")


def test_the_producers_at_wins_over_stored_at() -> None:
    data = json.dumps({"at": "2026-01-01T00:00:00Z"}).encode()

    event = decode_event(job_subject(QUEUE, JOB, "canceled"), data, stored_at=STORED_AT)

    assert event.at == datetime(2026, 1, 1, tzinfo=UTC)


def test_an_offset_datetime_is_normalised_to_utc() -> None:
    data = json.dumps({"at": "2026-01-01T02:00:00+02:00"}).encode()

    event = decode_event(job_subject(QUEUE, JOB, "canceled"), data)

    assert event.at == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert event.at.tzinfo == UTC


def test_constructing_an_event_with_an_offset_datetime_stores_utc() -> None:
    plus_two = timezone(timedelta(hours=2))

    event = Canceled(job_id=JOB, queue=QUEUE, at=datetime(2026, 1, 1, 2, tzinfo=plus_two))

    assert event.at.tzinfo == UTC
    assert event.at.hour == 0


# --- Decode errors -------------------------------------------------------------------------

GOOD_SUBMITTED = job_subject(QUEUE, JOB, "submitted")
AT_JSON = "2026-01-01T00:00:00Z"


def _decode_error(subject: str, data: bytes, **kw: datetime) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_event(subject, data, **kw)
    error = caught.value
    assert isinstance(error, FerrisQueueError)
    assert error.subject == subject  # kept, so the message can be dead-lettered as it came
    assert error.data == data
    assert error.reason and str(error) == error.reason
    return error


@pytest.mark.parametrize(
    ("field", "value", "subject_value"),
    [
        pytest.param("job_id", "other-job", JOB, id="job_id"),
        pytest.param("queue", "other-queue", QUEUE, id="queue"),
        pytest.param("event", "started", "submitted", id="event"),
    ],
)
def test_body_contradicting_subject_is_refused(field: str, value: str, subject_value: str) -> None:
    data = json.dumps({"type": "echo", "at": AT_JSON, field: value}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason == (
        f"{field} {value!r} in the body contradicts {subject_value!r} in the subject"
    )


def test_body_repeating_the_subject_is_fine() -> None:
    data = json.dumps(
        {"type": "echo", "at": AT_JSON, "job_id": JOB, "queue": QUEUE, "event": "submitted"}
    ).encode()

    assert decode_event(GOOD_SUBMITTED, data).job_id == JOB


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{not json", id="broken"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
        pytest.param(b'{"type": "echo"', id="truncated"),
        # Found by the NATS fuzz: json.loads raised RecursionError, which no loop treats
        # as poison, so the message came back for ever instead of being dead-lettered.
        pytest.param(b"[" * 200_000, id="nested-deeper-than-the-parser"),
    ],
)
def test_non_json_body(data: bytes) -> None:
    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason.startswith("body is not JSON")


@pytest.mark.parametrize(
    ("event", "body", "reason"),
    [
        # Found by schemathesis and the NATS fuzz: an offset time at the edge of the
        # calendar overflowed once converted to UTC (an OverflowError, a 500 at the gateway
        # and an item retried for ever by a service loop).
        pytest.param(
            "canceled",
            {"at": "0001-01-01T00:00:00+00:01"},
            "is out of range once converted to UTC",
            id="before-year-1",
        ),
        pytest.param(
            "canceled",
            {"at": "9999-12-31T23:00:00-05:00"},
            "is out of range once converted to UTC",
            id="after-year-9999",
        ),
        pytest.param(
            "scheduled",
            {"type": "echo", "at": "9999-12-31T00:00:00+00:00", "delay": 29_999_999},
            "at: date value out of range",
            id="delay-past-year-9999",
        ),
    ],
)
def test_a_time_out_of_range_is_a_decode_error(
    event: str, body: dict[str, object], reason: str
) -> None:
    error = _decode_error(job_subject(QUEUE, JOB, event), json.dumps(body).encode())

    assert reason in error.reason


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"submitted"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
    ],
)
def test_non_object_body(data: bytes) -> None:
    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason == "body must be a JSON object"


def test_unknown_field() -> None:
    data = json.dumps({"type": "echo", "at": AT_JSON, "urgency": 5}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert "urgency" in error.reason
    assert "not permitted" in error.reason


def test_bad_token_in_type() -> None:
    data = json.dumps({"type": "bad.type", "at": AT_JSON}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason.startswith("type:")
    assert "A-Z" in error.reason


def test_naive_datetime() -> None:
    data = json.dumps({"type": "echo", "at": "2026-01-01T00:00:00"}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason.startswith("at:")
    assert "timezone" in error.reason


def test_missing_at_without_stored_at() -> None:
    error = _decode_error(GOOD_SUBMITTED, b'{"type": "echo"}')

    assert error.reason == "at: Field required"


def test_missing_required_field_names_it() -> None:
    error = _decode_error(job_subject(QUEUE, JOB, "started"), b'{"attempt": 1}', stored_at=AT)

    assert error.reason == "worker: Field required"


def test_newer_schema_version_is_refused_not_guessed_at() -> None:
    newer = SCHEMA_VERSION + 1
    data = json.dumps({"type": "echo", "at": AT_JSON, "schema_version": newer}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert f"schema_version {newer} is newer" in error.reason
    assert "upgrade" in error.reason


def test_schema_version_zero_is_refused() -> None:
    data = json.dumps({"type": "echo", "at": AT_JSON, "schema_version": 0}).encode()

    error = _decode_error(GOOD_SUBMITTED, data)

    assert error.reason.startswith("schema_version:")


def test_unknown_event_kind_in_subject() -> None:
    subject = job_subject(QUEUE, JOB, "exploded")

    error = _decode_error(subject, json.dumps({"at": AT_JSON}).encode())

    assert "exploded" in error.reason


@pytest.mark.parametrize(
    "subject",
    [
        pytest.param("fq.job.emails.job1", id="too-few-tokens"),
        pytest.param("fq.job.emails.job1.submitted.extra", id="too-many-tokens"),
        pytest.param("xx.job.emails.job1.submitted", id="wrong-prefix"),
        pytest.param("fq.jobs.emails.job1.submitted", id="wrong-second-token"),
        pytest.param("fq.job.emails.*.submitted", id="wildcard-id"),
        pytest.param("fq.job.>", id="full-wildcard"),
        pytest.param("fq.job..job1.submitted", id="empty-queue"),
        pytest.param("fq.job.em ails.job1.submitted", id="space-in-queue"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_subject_shapes(subject: str) -> None:
    data = json.dumps({"type": "echo", "at": AT_JSON}).encode()

    error = _decode_error(subject, data)

    assert repr(subject) in error.reason


# --- Dedup keys ----------------------------------------------------------------------------


def test_dedup_key_of_submitted_is_one_per_job() -> None:
    a = Submitted(**COMMON, type="echo")
    b = Submitted(job_id=JOB, queue=QUEUE, at=AT + timedelta(minutes=1), type="other")

    assert a.dedup_key() == b.dedup_key() == f"{JOB}:submitted"


def test_dedup_key_of_started_is_one_per_attempt() -> None:
    first = Started(**COMMON, attempt=1, worker="w1")
    again = Started(job_id=JOB, queue=QUEUE, at=AT + timedelta(seconds=1), attempt=1, worker="w1")
    second = Started(**COMMON, attempt=2, worker="w2")

    assert first.dedup_key() == again.dedup_key() == f"{JOB}:started:1"
    assert second.dedup_key() == f"{JOB}:started:2"


@pytest.mark.parametrize(
    ("event", "key"),
    [
        pytest.param(
            Succeeded(**COMMON, attempt=3, duration_ms=1.0), f"{JOB}:succeeded:3", id="succeeded"
        ),
        pytest.param(
            Failed(**COMMON, attempt=2, error="e", error_type="E"), f"{JOB}:failed:2", id="failed"
        ),
        pytest.param(
            Released(**COMMON, attempt=4),
            f"{JOB}:released:4:{int(AT.timestamp() * 1_000_000)}",
            id="released-carries-its-time",
        ),
    ],
)
def test_dedup_key_of_attempt_events(event: BaseEvent, key: str) -> None:
    assert event.dedup_key() == key


def test_dedup_keys_of_progress_differ_per_timestamp() -> None:
    keys = {
        Progress(
            job_id=JOB, queue=QUEUE, at=AT + timedelta(microseconds=n), attempt=1, fraction=0.5
        ).dedup_key()
        for n in range(5)
    }

    assert len(keys) == 5
    assert all(k.startswith(f"{JOB}:progress:1:") for k in keys)


def test_dedup_key_of_progress_is_stable_for_the_same_report() -> None:
    a = Progress(**COMMON, attempt=1, fraction=0.5)
    b = Progress(**COMMON, attempt=1, fraction=0.5)

    assert a.dedup_key() == b.dedup_key()
    assert a.dedup_key() != Progress(**COMMON, attempt=2, fraction=0.5).dedup_key()


def test_dedup_key_of_events_without_attempt_uses_the_timestamp() -> None:
    a = CancelRequested(**COMMON)
    b = CancelRequested(job_id=JOB, queue=QUEUE, at=AT + timedelta(microseconds=1))

    assert a.dedup_key() == f"{JOB}:cancel_requested:{int(AT.timestamp() * 1_000_000)}"
    assert a.dedup_key() != b.dedup_key()


def test_a_job_is_canceled_once_whoever_records_it() -> None:
    by_gateway = Canceled(**COMMON, reason="canceled before it ran")
    by_worker = Canceled(job_id=JOB, queue=QUEUE, at=AT + timedelta(seconds=1))

    assert by_gateway.dedup_key() == by_worker.dedup_key() == f"{JOB}:canceled"


def test_dedup_key_survives_the_round_trip() -> None:
    for event in EVERY_EVENT:
        assert decode_event(event.subject, encode_event(event)).dedup_key() == event.dedup_key()


# --- Subjects ------------------------------------------------------------------------------


def test_job_subject() -> None:
    assert job_subject("emails", "j1", "started") == "fq.job.emails.j1.started"


def test_parse_job_subject() -> None:
    parsed = parse_job_subject("fq.job.emails.j1.started")

    assert parsed == JobSubject(queue="emails", job_id="j1", event="started")
    assert parsed.queue == "emails"


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        pytest.param("fq.job.emails.j1", "is not a job event subject", id="short"),
        pytest.param("nats.job.emails.j1.started", "is not a job event subject", id="prefix"),
        pytest.param("fq.job.emails.j1.started.x", "is not a job event subject", id="long"),
        pytest.param("fq.job.*.j1.started", "queue '*'", id="bad-queue"),
        pytest.param("fq.job.emails.>.started", "job id '>'", id="bad-id"),
        pytest.param("fq.job.emails.j1.", "event ''", id="bad-event"),
        pytest.param(f"fq.job.emails.{'x' * 65}.started", "is not a valid token", id="id-too-long"),
    ],
)
def test_parse_job_subject_errors(subject: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_job_subject(subject)

    assert fragment in str(caught.value)
    assert repr(subject) in str(caught.value)


def test_job_history_filter() -> None:
    assert job_history_filter("j1") == "fq.job.*.j1.*"


def test_runnable_filters() -> None:
    assert runnable_filters("emails") == [
        "fq.job.emails.*.submitted",
        "fq.job.emails.*.released",
        "fq.job.emails.*.redriven",
    ]


# --- Job ids -------------------------------------------------------------------------------


def test_new_job_id_is_a_token_and_a_uuid7() -> None:
    job_id = new_job_id()

    assert is_token(job_id)
    assert uuid.UUID(job_id).version == 7
    assert parse_job_subject(job_subject("q", job_id, "submitted")).job_id == job_id


def test_job_ids_sort_in_creation_order() -> None:
    ids = [new_job_id() for _ in range(1_000)]

    assert len(set(ids)) == 1_000
    assert sorted(ids) == ids


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc", True),
        ("A-Z_0-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a.b", False),
        ("a*", False),
        ("a>", False),
        ("a b", False),
        ("ä", False),
        pytest.param("abc\n", False, id="trailing-newline"),
    ],
)
def test_is_token(value: str, ok: bool) -> None:
    assert is_token(value) is ok


def test_an_event_with_a_newline_in_a_subject_token_is_refused() -> None:
    with pytest.raises(ValidationError):
        Submitted(job_id=JOB, queue="emails\n", at=AT, type="echo")


def test_parse_job_subject_refuses_a_newline_in_a_token() -> None:
    with pytest.raises(ValueError):
        parse_job_subject(f"fq.job.emails.{JOB}\n.submitted")


# --- Settings ------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FQ_* variables and a working directory without a .env file."""
    for name in list(os.environ):
        if name.upper().startswith("FQ_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_worker_queues_from_a_comma_list(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_WORKER_QUEUES", "a, b,,c ")

    assert Settings().worker_queues == ["a", "b", "c"]


def test_worker_queues_two(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_WORKER_QUEUES", "a,b")

    assert Settings().worker_queues == ["a", "b"]


@pytest.mark.parametrize("value", ["a.b", "a,b.c", "*", ">", ",", ""])
def test_worker_queues_must_be_tokens(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FQ_WORKER_QUEUES", value)

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert "worker_queues" in str(caught.value)
    assert "queue names must be" in str(caught.value)


def test_defaults(clean_env: Path) -> None:
    settings = Settings()

    assert settings.nats_port == DEFAULT_EMBEDDED_NATS_PORT == 4322
    assert settings.nats_url is None
    assert settings.effective_nats_url == settings.embedded_nats_url == "nats://127.0.0.1:4322"
    assert settings.gateway_url == "http://127.0.0.1:8000"
    assert settings.worker_queues == ["default"]
    assert settings.var_dir == Path("var")
    assert settings.database_url is None


def test_gateway_url_is_derived_from_host_and_port(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FQ_GATEWAY_HOST", "0.0.0.0")
    monkeypatch.setenv("FQ_GATEWAY_PORT", "9001")

    assert Settings().gateway_url == "http://0.0.0.0:9001"


def test_explicit_gateway_url_is_kept(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_GATEWAY_URL", "https://fq.example.com")
    monkeypatch.setenv("FQ_GATEWAY_PORT", "9001")

    assert Settings().gateway_url == "https://fq.example.com"


def test_nats_url_overrides_the_embedded_one(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FQ_NATS_URL", "nats://nats.internal:4222")

    assert Settings().effective_nats_url == "nats://nats.internal:4222"


def test_effective_database_url_defaults_to_sqlite_in_var_dir(clean_env: Path) -> None:
    assert Settings().effective_database_url == "sqlite:///var/ferrisqueue.db"


def test_effective_database_url_follows_var_dir(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FQ_VAR_DIR", str(clean_env / "state"))

    assert (
        Settings().effective_database_url == f"sqlite:///{clean_env / 'state' / 'ferrisqueue.db'}"
    )


def test_explicit_database_url_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_DATABASE_URL", "postgresql://db/fq")

    assert Settings().effective_database_url == "postgresql://db/fq"


def test_dot_env_in_the_working_directory_is_read_and_the_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("FQ_NATS_PORT=5555\nFQ_GATEWAY_PORT=7000\n")
    monkeypatch.setenv("FQ_GATEWAY_PORT", "7001")

    settings = Settings()

    assert settings.nats_port == 5555
    assert settings.gateway_port == 7001


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FQ_NATS_PORT", "0"),
        ("FQ_NATS_PORT", "70000"),
        ("FQ_LOG_LEVEL", "LOUD"),
        ("FQ_ACK_WAIT", "0.5"),
        ("FQ_PROJECTOR_CONSUMER", "fq.projector"),
    ],
)
def test_bad_values_are_refused_at_start(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError):
        Settings()
