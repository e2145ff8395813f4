"""Who is in the log: every event's ``actor``, how older shapes of events still read (the
log is permanent), what a plain-NATS producer is recorded as, the audit view, and the
gateway's stand-in for the authenticated caller."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from ferrisqueue.domain.audit import audit_trail
from ferrisqueue.domain.events import (
    ACTOR_HEADER,
    SCHEMA_VERSION,
    CancelRequested,
    Failed,
    Purged,
    Redriven,
    Released,
    Started,
    Submitted,
    decode_event,
    encode_event,
)
from ferrisqueue.domain.fold import fold
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import job_subject
from ferrisqueue.errors import DecodeError
from gateway.deps import ANONYMOUS_ACTOR, current_actor

JOB = "0190f3a2-7b1c-7d4e-8f00-123456789abc"
QUEUE = "emails"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T0_JSON = "2026-01-01T12:00:00Z"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _v1(event: str, **fields: Any) -> tuple[str, bytes]:
    """A body exactly as FerrisQueue wrote it under schema 1 (complete, ``schema_version`` 1,
    the who-field of its kind), and its subject."""
    body = {"event": event, "schema_version": 1, "job_id": JOB, "queue": QUEUE, "at": T0_JSON}
    return job_subject(QUEUE, JOB, event), json.dumps({**body, **fields}).encode()


# --- older shapes still read ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "fields", "actor"),
    [
        ("submitted", {"type": "echo", "submitted_by": "127.0.0.1"}, "claimed:127.0.0.1"),
        ("submitted", {"type": "echo", "submitted_by": "cron:nightly"}, "claimed:cron:nightly"),
        ("submitted", {"type": "echo"}, None),
        ("cancel_requested", {"requested_by": "10.0.0.7"}, "claimed:10.0.0.7"),
        ("redriven", {"attempt": 3, "redriven_by": "alice@ops"}, "claimed:alice@ops"),
        ("purged", {"purged_by": "bob@ops", "reason": "junk"}, "claimed:bob@ops"),
        ("started", {"attempt": 1, "worker": "host-42"}, "worker:host-42"),
        ("failed", {"attempt": 1, "error": "boom", "error_type": "RuntimeError"}, None),
        ("released", {"attempt": 1}, None),
    ],
)
def test_a_schema_1_event_still_decodes_and_its_who_field_becomes_the_actor(
    event: str, fields: dict[str, Any], actor: str | None
) -> None:
    subject, data = _v1(event, **fields)

    decoded = decode_event(subject, data)

    assert decoded.event == event and decoded.schema_version == 1
    # Nobody verified a schema-1 who-field: it is a claim. Nothing is invented where the
    # event named nobody (the audit shows "-" for those old events).
    assert decoded.actor == actor
    assert not {"submitted_by", "requested_by", "redriven_by", "purged_by"} & set(
        decoded.model_dump()
    )


def test_schema_1_fields_other_than_the_actor_are_kept() -> None:
    subject, data = _v1("redriven", attempt=3, redriven_by="alice", reason="smtp fixed")

    decoded = decode_event(subject, data)

    assert decoded == Redriven(
        job_id=JOB,
        queue=QUEUE,
        at=T0,
        schema_version=1,
        attempt=3,
        reason="smtp fixed",
        actor="claimed:alice",
    )


def test_a_schema_1_history_folds_and_audits_with_its_claimed_actors() -> None:
    history = [
        StoredEvent.decode(n, *_v1(event, **fields), stored_at=T0)
        for n, (event, fields) in enumerate(
            [
                ("submitted", {"type": "echo", "submitted_by": "127.0.0.1"}),
                ("started", {"attempt": 1, "worker": "w1"}),
                ("failed", {"attempt": 1, "error": "boom", "error_type": "E"}),
            ],
            1,
        )
    ]

    trail = audit_trail(history)

    assert [(e.event, e.actor, e.applied) for e in trail] == [
        ("submitted", "claimed:127.0.0.1", True),
        ("started", "worker:w1", True),
        ("failed", None, True),
    ]
    state = fold(s.event for s in history if s.event is not None)
    assert state is not None and state.submitted_by == "claimed:127.0.0.1"


def test_an_actor_given_beside_an_old_who_field_wins() -> None:
    subject = job_subject(QUEUE, JOB, "purged")
    data = json.dumps({"purged_by": "someone", "actor": "key:ops"}).encode()

    assert decode_event(subject, data, stored_at=T0).actor == "key:ops"


# --- what FerrisQueue writes ---------------------------------------------------------------


def test_every_stored_event_names_an_actor_system_when_its_producer_named_none() -> None:
    named = Failed(
        job_id=JOB, queue=QUEUE, at=T0, attempt=1, error="e", error_type="E", actor="worker:w1"
    )
    unnamed = Released(job_id=JOB, queue=QUEUE, at=T0)

    assert json.loads(encode_event(named))["actor"] == "worker:w1"
    assert json.loads(encode_event(unnamed))["actor"] == "system"
    assert json.loads(encode_event(unnamed))["schema_version"] == SCHEMA_VERSION == 2
    assert decode_event(named.subject, encode_event(named)) == named


def test_an_actor_is_bounded_and_never_empty() -> None:
    with pytest.raises(ValueError, match="at most 200"):
        Started(job_id=JOB, queue=QUEUE, at=T0, attempt=1, worker="w", actor="x" * 201)
    with pytest.raises(ValueError, match="at least 1"):
        CancelRequested(job_id=JOB, queue=QUEUE, at=T0, actor="")


# --- plain-NATS producers ------------------------------------------------------------------


def test_a_plain_nats_producer_naming_nobody_is_nats_anonymous() -> None:
    subject = job_subject(QUEUE, JOB, "submitted")

    event = decode_event(subject, b'{"type": "echo"}', stored_at=T0)

    assert event.actor == "nats:anonymous"


@pytest.mark.parametrize(
    ("header", "actor"),
    [
        ("bob@batch-host", "claimed:bob@batch-host"),
        ("  key:admin ", "claimed:key:admin"),  # a claim is never taken for an identity
        ("   ", "nats:anonymous"),
        ("y" * 500, "claimed:" + "y" * 192),
    ],
)
def test_a_plain_nats_producer_may_claim_a_name_in_a_header_recorded_as_a_claim(
    header: str, actor: str
) -> None:
    subject = job_subject(QUEUE, JOB, "submitted")

    event = decode_event(subject, b'{"type": "echo"}', stored_at=T0, headers={ACTOR_HEADER: header})

    assert event.actor == actor


def test_a_plain_nats_producer_using_an_old_who_field_is_recorded_as_claiming_it() -> None:
    subject = job_subject(QUEUE, JOB, "submitted")
    data = b'{"type": "echo", "submitted_by": "etl-job"}'

    assert decode_event(subject, data, stored_at=T0).actor == "claimed:etl-job"


@pytest.mark.parametrize("value", [5, {"deep": [1, 2]}, ["a"], True])
def test_an_old_who_field_that_is_not_text_is_undecodable_as_it_was(value: object) -> None:
    subject = job_subject(QUEUE, JOB, "submitted")
    data = json.dumps({"type": "echo", "submitted_by": value}).encode()

    with pytest.raises(DecodeError, match="submitted_by"):
        decode_event(subject, data, stored_at=T0)


def test_the_header_claim_reaches_the_event_through_stored_messages() -> None:
    message = SimpleNamespace(
        seq=5,
        subject=job_subject(QUEUE, JOB, "submitted"),
        data=b'{"type": "echo"}',
        stored_at=T0,
        headers={ACTOR_HEADER: "bob"},
    )

    stored = StoredEvent.of(message)

    assert stored.event is not None and stored.event.actor == "claimed:bob"


# --- the audit view ------------------------------------------------------------------------


def test_the_audit_trail_shows_the_actor_of_every_event_and_none_for_undecodable_ones() -> None:
    events = [
        Submitted(job_id=JOB, queue=QUEUE, at=t(0), type="echo", actor="key:alice"),
        Started(job_id=JOB, queue=QUEUE, at=t(1), attempt=1, worker="w1", actor="worker:w1"),
        Failed(
            job_id=JOB,
            queue=QUEUE,
            at=t(2),
            attempt=1,
            error="boom",
            error_type="E",
            retry_at=t(5),
            actor="worker:w1",
        ),
        Released(job_id=JOB, queue=QUEUE, at=t(5), attempt=1, actor="scheduler"),
        CancelRequested(job_id=JOB, queue=QUEUE, at=t(6), actor="key:bob"),
    ]
    history = [
        StoredEvent.decode(n, e.subject, encode_event(e), e.at) for n, e in enumerate(events)
    ]
    history.append(StoredEvent.decode(9, job_subject(QUEUE, JOB, "purged"), b"{", t(7)))

    trail = audit_trail(history)

    assert [(e.event, e.actor) for e in trail] == [
        ("submitted", "key:alice"),
        ("started", "worker:w1"),
        ("failed", "worker:w1"),
        ("released", "scheduler"),
        ("cancel_requested", "key:bob"),
        ("purged", None),
    ]
    assert trail[0].body is not None and trail[0].body["actor"] == "key:alice"


def test_a_purge_names_its_actor_in_the_event_not_in_a_field_of_its_own() -> None:
    purged = Purged(job_id=JOB, queue=QUEUE, at=T0, actor="key:ops", reason="junk")

    assert json.loads(encode_event(purged)).keys() >= {"actor", "reason"}
    assert "purged_by" not in json.loads(encode_event(purged))


# --- the gateway's actor of a request --------------------------------------------------------


def _request(principal: object | None = None) -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/jobs", "headers": []})
    if principal is not None:
        request.state.principal = principal
    return request


async def test_a_request_without_a_principal_acts_as_anonymous() -> None:
    assert await current_actor(_request()) == ANONYMOUS_ACTOR == "anonymous"


async def test_a_request_acts_as_the_principal_authentication_attached() -> None:
    principal = SimpleNamespace(name="alice", actor="key:alice")

    assert await current_actor(_request(principal)) == "key:alice"
