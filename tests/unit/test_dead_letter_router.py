"""The dead-letter router's error policy without NATS: an advisory it cannot read is parked,
one naming a message the log does not hold is parked, and one whose routing fails is nak'd
to come back; none of them raises (a raise used to stop the whole scheduler)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.service_loop import Poison
from scheduler.dead_letters import Advisory, DeadLetterRouter
from tests.support.loops import FakeMsg

pytestmark = pytest.mark.timeout(10)

ADVISORY_SUBJECT = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.FQ_EVENTS.fq-worker-default"


def advisory(body: Any) -> FakeMsg:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return FakeMsg(ADVISORY_SUBJECT, data, seq=5)


class Log:
    """An event log whose reads answer ``found`` or raise ``error``."""

    def __init__(self, *, found: Any = None, error: Exception | None = None) -> None:
        self._found, self._error = found, error
        self.reads: list[tuple[str, str, int | None]] = []

    async def read(self, stream: str, subject: str, *, from_seq: int | None = None) -> Any:
        self.reads.append((stream, subject, from_seq))
        if self._error is not None:
            raise self._error
        return self._found


def router(event_log: Log) -> DeadLetterRouter:
    return DeadLetterRouter(event_log)  # type: ignore[arg-type]  # only read() is reached


def test_an_advisory_names_the_message_given_up_on_and_its_deliveries() -> None:
    parsed = Advisory.parse(json.dumps({"stream_seq": 42, "deliveries": 3}).encode())

    assert parsed == Advisory(stream_seq=42, deliveries=3)


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"stream_seq": "many"}',
        b'{"stream_seq": null}',
        b'{"stream_seq": 0}',
        b'{"stream_seq": 7, "deliveries": "x"}',
    ],
)
def test_what_is_not_a_max_deliveries_advisory_is_poison(data: bytes) -> None:
    with pytest.raises(Poison):
        Advisory.parse(data)


async def test_a_malformed_advisory_is_parked_without_touching_the_log() -> None:
    event_log = Log()
    msg = advisory(b"{not json")

    await router(event_log).process(msg)  # type: ignore[arg-type]

    assert msg.settled == [("term", None)]
    assert event_log.reads == []


async def test_an_advisory_naming_a_message_the_log_does_not_hold_is_parked() -> None:
    msg = advisory({"stream_seq": 999, "deliveries": 2})
    event_log = Log(found=None)

    await router(event_log).process(msg)  # type: ignore[arg-type]

    assert msg.settled == [("term", None)]
    assert event_log.reads == [("FQ_EVENTS", "fq.job.>", 999)]


async def test_an_advisory_whose_routing_fails_is_nakd_to_come_back() -> None:
    msg = advisory({"stream_seq": 7, "deliveries": 2})
    loop = router(Log(error=NatsUnavailable("reading fq.job.>: timeout")))

    await loop.process(msg)  # type: ignore[arg-type]

    assert [how for how, _ in msg.settled] == ["nak"]
    assert loop.signals.retried.count == 1
