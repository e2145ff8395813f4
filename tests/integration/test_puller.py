"""The puller against a consumer nobody serves (no leader in an election, or deleted): it
asks again after a growing pause instead of spinning, says so once, and gives up after
``give_up_after`` when its owner can recover by re-creating the consumer."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Pulling
from ferrisqueue.log.puller import Puller

pytestmark = [pytest.mark.integration, pytest.mark.timeout(20)]


async def test_a_consumer_nobody_serves_is_given_up_after_the_limit_not_spun_on(
    nc: Client, event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    puller = Puller(nc, EVENT_STREAM, "no-such-consumer", Pulling(expires=0.5, give_up_after=1.0))
    await puller.start()

    async def one() -> int:
        return 1

    began = time.monotonic()
    with pytest.raises(NatsUnavailable, match="no answer to pull requests"):
        async for _ in puller.bursts(asyncio.Event(), request_size=one):
            pytest.fail("nothing can be delivered")
    took = time.monotonic() - began
    await puller.stop()

    assert 1.0 <= took < 5.0
    warnings = [r for r in caplog.records if "no answer to pull requests" in r.getMessage()]
    assert len(warnings) == 1  # once per streak, not once per request
