"""The pure parts of the dead-letter operations: the request models, how a kept message is
shown, and the CLI's options (who may be acted on: tests/unit/test_commands.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from pydantic import ValidationError

from ferrisqueue.cli.dead_letters import action_body, parse_time, selection
from ferrisqueue.domain.events import BaseEvent, encode_event
from ferrisqueue.domain.stored import StoredEvent
from gateway.dead_letter_ops import MAX_BATCH, DeadLetterMessage
from gateway.dead_letter_schemas import DeadLetterAction, DeadLetterMessageOut

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JOB = {"job_id": "j1", "queue": "default"}


def history(*events: BaseEvent) -> list[StoredEvent]:
    return [
        StoredEvent.decode(seq, e.subject, encode_event(e), e.at) for seq, e in enumerate(events, 1)
    ]


# --- request and response models -------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"job_ids": ["a"]},
        {"filter": {}},  # an empty filter selects every dead letter
        {"filter": {"queue": "q", "reason": "Timeout", "since": "2026-03-01T12:00:00Z"}},
        {"job_ids": ["a", "b"], "reason": " fixed in 1.4 "},
    ],
)
def test_valid_action_bodies(body: dict[str, Any]) -> None:
    action = DeadLetterAction.model_validate(body)

    assert (action.job_ids is None) != (action.filter is None)
    assert action.reason is None or action.reason == action.reason.strip()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "exactly one of job_ids or filter"),
        ({"job_ids": ["a"], "filter": {}}, "exactly one of job_ids or filter"),
        ({"job_ids": [], "reason": "x"}, "job_ids"),
        ({"job_ids": ["not a token!"]}, "job_ids"),
        ({"job_ids": ["a"] * (MAX_BATCH + 1)}, "job_ids"),
        ({"filter": {"since": "2026-03-01T12:00:00"}}, "timezone"),
        ({"filter": {"status": "failed"}}, "status"),
        ({"job_ids": ["a"], "reason": "x" * 1001}, "reason"),
        # Who acts is the authenticated caller: a body cannot name anyone.
        ({"job_ids": ["a"], "by": "alice"}, "`by` is not accepted"),
        ({"job_ids": ["a"], "actor": "key:admin"}, "actor"),
    ],
)
def test_invalid_action_bodies_say_why(body: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as raised:
        DeadLetterAction.model_validate(body)

    assert complaint in str(raised.value)


def test_a_kept_message_shows_its_lineage_and_its_body_as_json_and_text() -> None:
    message = DeadLetterMessage(
        subject="fq.dlq.default.j1",
        seq=7,
        stored_at=T0,
        headers={"Nats-Msg-Id": "j1:dlq:3", "Fq-Reason": "gave up", "Fq-Attempts": "3"},
        data=b'{"type": "echo"}',
    )
    shown = DeadLetterMessageOut.from_message(message)

    assert shown.lineage == {"Fq-Reason": "gave up", "Fq-Attempts": "3"}
    assert shown.headers["Nats-Msg-Id"] == "j1:dlq:3"
    assert shown.body == {"type": "echo"}
    assert shown.text == '{"type": "echo"}'


def test_a_kept_message_that_is_not_json_is_shown_as_text() -> None:
    message = DeadLetterMessage("fq.dlq.q.j", 1, T0, {}, b"\xffnot json")
    shown = DeadLetterMessageOut.from_message(message)

    assert shown.body is None
    assert shown.text == "\ufffdnot json"


# --- the CLI's options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("30m", (T0 - timedelta(minutes=30)).isoformat()),
        ("2h", (T0 - timedelta(hours=2)).isoformat()),
        ("1.5d", (T0 - timedelta(hours=36)).isoformat()),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),  # left to the gateway to judge
        (None, None),
    ],
)
def test_times_are_ages_or_passed_on(given: str | None, expected: str | None) -> None:
    assert parse_time(given, now=T0) == expected


def test_a_selection_has_only_the_options_given() -> None:
    assert selection("mail", None, "timeout", "1h", None, now=T0) == {
        "queue": "mail",
        "reason": "timeout",
        "since": (T0 - timedelta(hours=1)).isoformat(),
    }


def test_an_action_names_jobs_or_a_filter_and_never_who_acts() -> None:
    assert action_body(["a", "b"], {}, False, None) == {"job_ids": ["a", "b"]}
    assert action_body(None, {"queue": "q"}, False, "fixed") == {
        "filter": {"queue": "q"},
        "reason": "fixed",
    }
    assert action_body(None, {}, True, None) == {"filter": {}}
    with pytest.raises(typer.BadParameter, match="not both"):
        action_body(["a"], {"queue": "q"}, False, None)
    with pytest.raises(typer.BadParameter, match="name job ids"):
        action_body(None, {}, False, None)
