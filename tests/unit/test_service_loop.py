"""The one shape of a background loop (ferrisqueue.log.service_loop), on an in-memory consumer:
a failing item is nak'd with backoff and the loop goes on, poison is parked, a loop that
cannot start retries without touching its siblings, and a stop drains the item in hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.errors import DecodeError, NatsUnavailable
from ferrisqueue.log.service_loop import ConsumerLoop, Poison, Redeliver, Signal
from tests.support.loops import FakeMsg, MemorySource

pytestmark = pytest.mark.timeout(10)

WAIT = 5.0
"""Seconds a test waits for a signal before it fails."""

Behaviour = Callable[[FakeMsg], Awaitable[None]]


async def succeed(msg: FakeMsg) -> None:
    return None


class Loop(ConsumerLoop):
    """A loop over a :class:`MemorySource`; ``behaviour`` handles each message, and the
    first ``broken_starts`` lives fail before they pull (a consumer lookup failing)."""

    def __init__(
        self,
        name: str,
        behaviour: Behaviour = succeed,
        *,
        broken_starts: float = 0,
    ) -> None:
        self.source = MemorySource()
        self.name, self.stream, self.consumer = name, "S", "c"
        super().__init__(
            None,  # type: ignore[arg-type]  # never used: the source stands in for NATS
            retry=RetryPolicy(base=1.0, cap=30.0, jitter=0.2),
            restart=RetryPolicy(base=0.01, cap=0.05),  # restarts in ms: the test waits less
            draw=lambda: 0.5,  # no jitter: delays are exact
            source=lambda: self.source,
        )
        self._behaviour = behaviour
        self.broken_starts = broken_starts

    async def prepare(self) -> None:
        if self.broken_starts > 0:
            self.broken_starts -= 1
            raise NatsUnavailable("consumer lookup failed")

    async def handle(self, msg: Any) -> None:
        await self._behaviour(msg)


async def run_until(loop: Loop, signal: Signal, *msgs: FakeMsg) -> None:
    """Feed ``msgs`` to a started ``loop``, wait for ``signal`` once, then stop it."""
    loop.source.put(*msgs)
    loop.start()
    await signal.reached(1, timeout=WAIT)
    await loop.stop()


async def failing(msg: FakeMsg) -> None:
    if msg.subject == "bad":
        raise RuntimeError("boom")


@pytest.mark.parametrize(("deliveries", "delay"), [(1, 1.0), (3, 4.0), (50, 30.0)])
async def test_an_item_that_raises_is_nakd_with_capped_backoff_and_the_next_is_handled(
    deliveries: int, delay: float, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop("flaky loop", failing)
    bad = FakeMsg("bad", seq=7, deliveries=deliveries)
    good = FakeMsg("good", seq=8)
    await run_until(loop, loop.signals.handled, bad, good)

    assert bad.settled == [("nak", delay)]
    assert good.settled == [("ack", None)]
    assert loop.signals.retried.count == 1
    failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
    # The log says which loop, which message, which sequence, and why (with the traceback).
    assert "flaky loop" in failure.getMessage() and "'bad' (seq 7" in failure.getMessage()
    assert failure.exc_info is not None and "boom" in str(failure.exc_info[1])


async def test_an_expected_failure_is_a_warning_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def nats_away(msg: FakeMsg) -> None:
        raise NatsUnavailable("not connected to NATS")

    loop = Loop("relay", nats_away)
    msg = FakeMsg("x", seq=3)
    await run_until(loop, loop.signals.retried, msg)

    assert msg.settled == [("nak", 1.0)]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "not connected to NATS" in warning.getMessage() and warning.exc_info is None


@pytest.mark.parametrize(
    "poison",
    [Poison("not an advisory"), DecodeError("not JSON", subject="x", data=b"{")],
    ids=["poison", "undecodable"],
)
async def test_a_poison_item_is_parked_not_retried_and_the_loop_goes_on(
    poison: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    async def poisoned(msg: FakeMsg) -> None:
        if msg.subject == "poison":
            raise poison

    loop = Loop("router", poisoned)
    bad, good = FakeMsg("poison", seq=11), FakeMsg("fine", seq=12)
    await run_until(loop, loop.signals.handled, bad, good)

    assert bad.settled == [("term", None)]
    assert good.settled == [("ack", None)]
    assert (loop.signals.parked.count, loop.signals.retried.count) == (1, 0)
    assert any("parked 'poison' (seq 11" in r.getMessage() for r in caplog.records)


async def test_a_handler_asking_for_redelivery_is_nakd_with_its_delay_not_counted_a_failure() -> (
    None
):
    async def later(msg: FakeMsg) -> None:
        raise Redeliver(2.5)

    loop = Loop("cron", later)
    msg = FakeMsg("tick")
    await run_until(loop, loop.signals.redelivered, msg)

    assert msg.settled == [("nak", 2.5)]
    assert loop.signals.retried.count == 0


async def test_a_loop_whose_start_keeps_failing_retries_and_its_sibling_keeps_running() -> None:
    broken = Loop("broken", broken_starts=float("inf"))
    healthy = Loop("healthy")
    stopping = asyncio.Event()
    msgs = [FakeMsg(f"m{n}", seq=n) for n in range(3)]

    async with asyncio.TaskGroup() as group:  # what the scheduler's __main__ does
        group.create_task(broken.run(stopping))
        group.create_task(healthy.run(stopping))
        healthy.source.put(*msgs)
        await broken.signals.loop_failures.reached(3, timeout=WAIT)
        await healthy.signals.handled.reached(3, timeout=WAIT)
        stopping.set()

    assert [m.settled for m in msgs] == [[("ack", None)]] * 3
    assert broken.signals.serving.count == 0
    assert broken.signals.stopped.is_set() and healthy.signals.stopped.is_set()


async def test_a_loop_whose_consumer_lookup_fails_starts_again_until_it_serves() -> None:
    loop = Loop("timers", broken_starts=2)
    msg = FakeMsg("event")
    await run_until(loop, loop.signals.handled, msg)

    assert loop.signals.loop_failures.count == 2
    assert loop.signals.serving.count == 1
    assert msg.settled == [("ack", None)]


async def test_stop_drains_the_item_in_hand_and_hands_back_the_rest() -> None:
    in_hand, finish = asyncio.Event(), asyncio.Event()

    async def slow(msg: FakeMsg) -> None:
        in_hand.set()
        await finish.wait()

    loop = Loop("slow", slow)
    first, second = FakeMsg("first", seq=1), FakeMsg("second", seq=2)
    loop.source.put(first, second)
    loop.start()
    await asyncio.wait_for(in_hand.wait(), WAIT)

    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0)  # a yield, not a wait: stop() asks the loop to stop, then waits
    assert not stopping.done(), "stop returned with an item still in hand"
    finish.set()
    await asyncio.wait_for(stopping, WAIT)

    assert first.settled == [("ack", None)]  # drained: finished, not abandoned
    assert second.settled == [("nak", None)]  # never handed over: back at once
    assert loop.signals.stopped.is_set()
