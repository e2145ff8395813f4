"""The worker's one lease keeper: heartbeats each held message every AckWait/3, wakes up for
a shorter lease than any it holds, survives a failed heartbeat, forgets released messages.

A heartbeat is ``Delivery.in_progress()``; these tests hand the keeper a message that records its
heartbeats (the scheduling is what is tested here; tests/fault/test_lease.py shows a real
job keeping its lease on a real nats-server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import pytest

from ferrisqueue.log.port import Delivery
from worker.lease import LeaseKeeper

pytestmark = pytest.mark.timeout(10)


class RecordingMsg:
    """Stands in for a delivered message: records when it was heartbeated."""

    def __init__(self, subject: str, *, fail_first: int = 0) -> None:
        self.subject = subject
        self.beats: list[float] = []
        self._fail = fail_first
        self._beaten = asyncio.Condition()

    async def in_progress(self) -> None:
        if self._fail:
            self._fail -= 1
            raise ConnectionError("nats is away")
        async with self._beaten:
            self.beats.append(asyncio.get_running_loop().time())
            self._beaten.notify_all()

    async def wait_beats(self, count: int, within: float = 5.0) -> None:
        async with self._beaten:
            await asyncio.wait_for(self._beaten.wait_for(lambda: len(self.beats) >= count), within)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[LeaseKeeper]:
    keeper = LeaseKeeper()
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def as_msg(msg: RecordingMsg) -> Delivery:
    return cast(Delivery, msg)


async def test_a_held_message_is_heartbeaten_every_third_of_its_ack_wait() -> None:
    msg = RecordingMsg("fq.job.q.a.submitted")
    async with running() as keeper:
        began = asyncio.get_running_loop().time()
        with keeper.hold(as_msg(msg), ack_wait=0.3):
            await msg.wait_beats(3)
        assert keeper.held == 0
    gaps = [b - a for a, b in zip([began, *msg.beats], msg.beats, strict=False)]
    assert all(gap >= 0.1 * 0.9 for gap in gaps), gaps
    assert all(gap < 0.1 * 5 for gap in gaps), gaps


async def test_a_shorter_lease_than_any_held_wakes_the_keeper() -> None:
    slow, fast = RecordingMsg("slow"), RecordingMsg("fast")
    async with running() as keeper:
        with keeper.hold(as_msg(slow), ack_wait=300.0):
            await asyncio.sleep(0)  # let the keeper go to sleep for the slow lease's 100 s
            with keeper.hold(as_msg(fast), ack_wait=0.15):
                await fast.wait_beats(2, within=3.0)
    assert slow.beats == []


async def test_a_failed_heartbeat_does_not_stop_the_keeper() -> None:
    msg = RecordingMsg("flaky", fail_first=2)
    async with running() as keeper:
        with keeper.hold(as_msg(msg), ack_wait=0.15):
            await msg.wait_beats(1)
    assert len(msg.beats) >= 1


async def test_a_released_message_is_never_heartbeaten() -> None:
    released, held = RecordingMsg("released"), RecordingMsg("held")
    async with running() as keeper:
        with keeper.hold(as_msg(held), ack_wait=0.15):
            with keeper.hold(as_msg(released), ack_wait=0.15):
                pass
            await held.wait_beats(3)
    assert released.beats == []
