"""Concurrency and rate limits: the pure slot tables and scopes, the fold of ``throttled``,
limits as queue events, the shared slot tables on the in-memory log, and a worker that holds
a job of a full key until a slot frees (one ``throttled``, no delivery spent)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ferrisqueue.domain.commands import decide_cancel
from ferrisqueue.domain.events import Started, Submitted, Throttled
from ferrisqueue.domain.fold import fold
from ferrisqueue.domain.limits import (
    LimitKind,
    QueueLimits,
    RateLimit,
    claim,
    release,
    renew,
    scopes_for,
)
from ferrisqueue.domain.queuecontrol import QueueEvent, QueueEventKind, fold_queue
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.domain.subjects import EVENT_STREAM, job_history_filter
from ferrisqueue.log.queuebook import QueueBook
from ferrisqueue.log.slots import SlotBook
from ferrisqueue.log.topology import worker_consumer_name
from tests.support.memory import kinds, memory_log, running_worker, submit, wait_for_kinds
from worker.limits import Admission
from worker.registry import TaskRegistry

AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_a_slot_is_refused_when_all_are_held_and_a_holder_never_counts_twice() -> None:
    table = claim({}, "a", slots=2, now=0, ttl=10)
    assert table is not None
    table = claim(table, "b", slots=2, now=1, ttl=10)
    assert table == {"a": 10, "b": 11}

    assert claim(table, "c", slots=2, now=2, ttl=10) is None
    assert claim(table, "a", slots=2, now=2, ttl=10) == {"a": 12, "b": 11}  # a redelivery
    assert release(table, "a", now=3) == {"b": 11}


def test_an_expired_lease_frees_its_slot_and_renewal_keeps_a_live_one() -> None:
    table = {"dead": 5.0, "alive": 5.0}

    renewed = renew(table, {"alive"}, now=4, ttl=10)
    assert renewed == {"dead": 5.0, "alive": 14.0}
    assert claim(renewed, "new", slots=2, now=6, ttl=10) == {"alive": 14.0, "new": 16.0}


def test_scopes_take_slots_key_first_then_queue_then_tokens() -> None:
    limits = QueueLimits(
        concurrency=5,
        key_concurrency=2,
        rate=RateLimit(limit=10),
        key_rate=RateLimit(limit=3, period=60, burst=1),
    )

    scopes = scopes_for("work", "acme", limits)

    assert [(s.kind, s.key) for s in scopes] == [
        (LimitKind.CONCURRENCY, "q.work.slots.acme"),
        (LimitKind.CONCURRENCY, "q.work.slots"),
        (LimitKind.RATE_LIMITED, "q.work.rate.acme"),
        (LimitKind.RATE_LIMITED, "q.work.rate"),
    ]
    assert [s.key for s in scopes_for("work", None, limits)] == ["q.work.slots", "q.work.rate"]
    assert scopes[2].rate is not None and scopes[2].rate.capacity == 1
    assert scopes[2].rate.per_second == pytest.approx(0.05)
    assert QueueLimits().unlimited and not limits.unlimited


def test_throttled_gives_a_pending_job_its_reason_and_started_clears_it() -> None:
    common = {"job_id": "j1", "queue": "work", "at": AT}
    submitted = Submitted(**common, type="echo", concurrency_key="acme")
    throttled = Throttled(**common, attempt=1, reason="concurrency", detail="key acme: 1 of 1")

    waiting = fold([submitted, throttled])
    running = fold([submitted, throttled, Started(**common, attempt=1, worker="w1")])

    assert waiting is not None and waiting.status is JobStatus.PENDING
    assert waiting.pending_reason is PendingReason.CONCURRENCY
    assert running is not None and running.pending_reason is None
    assert throttled.dedup_key() == "j1:throttled:1:concurrency"


def test_limits_and_pause_are_separate_aspects_of_a_queue() -> None:
    limits = QueueLimits(key_concurrency=2)
    events = [
        (3, QueueEvent(queue="work", event=QueueEventKind.PAUSED, actor="key:a", at=AT)),
        (
            5,
            QueueEvent(
                queue="work", event=QueueEventKind.LIMITS, actor="key:b", at=AT, limits=limits
            ),
        ),
    ]

    state = fold_queue("work", events)

    assert state.paused and state.changed_by == "key:a"
    assert state.limits == limits and state.limits_by == "key:b" and state.seq == 5


@pytest.mark.timeout(10)
async def test_setting_limits_twice_records_one_event_and_the_state_reads_both_aspects() -> None:
    book = QueueBook(await memory_log())
    limits = QueueLimits(concurrency=3)

    first = await book.set_limits("work", limits, actor="key:alice", at=AT)
    again = await book.set_limits("work", limits, actor="key:bob", at=AT)
    await book.pause("work", actor="key:carol", at=AT)
    lifted = await book.set_limits("work", QueueLimits(), actor="key:dan", at=AT)

    assert first.limits == limits and again == first
    assert lifted.paused and lifted.limits.unlimited and lifted.limits_by == "key:dan"
    assert await book.state("work") == lifted
    assert [e.event for _, e in await book.history("work")] == ["limits", "paused", "limits"]


@pytest.mark.timeout(10)
async def test_shared_slot_tables_give_each_slot_once_and_take_back_expired_ones() -> None:
    log = await memory_log()
    now = [100.0]
    one, two = (SlotBook(log.connect(), clock=lambda: now[0]) for _ in range(2))

    assert await one.claim("q.w.slots", "a", slots=2, ttl=5) == 1
    assert await two.claim("q.w.slots", "b", slots=2, ttl=5) == 2
    assert await two.claim("q.w.slots", "c", slots=2, ttl=5) is None
    await one.release("q.w.slots", "a")
    assert await two.claim("q.w.slots", "c", slots=2, ttl=5) == 2

    now[0] += 6  # b's and c's holders died: nobody renewed their leases
    assert await one.claim("q.w.slots", "d", slots=1, ttl=5) == 1
    assert set(await one.holders("q.w.slots")) == {"d"}


@pytest.mark.timeout(10)
async def test_a_job_of_a_full_key_waits_once_recorded_without_a_delivery_then_runs() -> None:
    log = await memory_log()
    await QueueBook(log).set_limits(
        "default", QueueLimits(key_concurrency=1), actor="key:ops", at=AT
    )
    registry = TaskRegistry()
    release_first = asyncio.Event()
    order: list[str] = []

    @registry.task("hold")
    async def hold(ctx: object, payload: dict[str, object]) -> None:
        order.append(str(payload["n"]))
        if payload["n"] == 1:
            await release_first.wait()

    async with running_worker(log, registry):
        first = await submit(log, "hold", payload={"n": 1}, concurrency_key="acme")
        await wait_for_kinds(log, first, "started")
        second = await submit(log, "hold", payload={"n": 2}, concurrency_key="acme")
        other = await submit(log, "hold", payload={"n": 3}, concurrency_key="other")
        await wait_for_kinds(log, other, "succeeded")  # another key is not held up
        waiting = await wait_for_kinds(log, second, "throttled")
        # Not a synchronisation: a window in which the waiting job polls the full table
        # several times (50 ms, 100 ms, ...) and must record nothing more.
        await asyncio.sleep(0.3)
        assert waiting == kinds(log, second) == ["submitted", "throttled"]

        release_first.set()
        history = await wait_for_kinds(log, second, "succeeded")

    assert history == ["submitted", "throttled", "started", "succeeded"]
    assert order == ["1", "3", "2"]
    started = log.messages(EVENT_STREAM, job_history_filter(second))[2]
    assert b'"attempt":1' in started.data  # held, not redelivered: still the first delivery


@pytest.mark.timeout(10)
async def test_a_running_jobs_slot_is_renewed_past_its_ttl_and_given_back_at_the_end() -> None:
    log = await memory_log()
    limits = QueueLimits(concurrency=1)
    admission = Admission(log.connect(), lambda _queue: limits)
    others = SlotBook(log.connect())
    scopes = admission.scopes("work", None)
    renewing = asyncio.create_task(admission.run())
    try:
        permit = await admission.admit("job-1", scopes, 0.3, _never_waits)
        # Three ttls later the lease is still held: the renewer wrote it again each 0.1 s.
        await asyncio.sleep(0.9)
        assert await others.claim("q.work.slots", "job-2", slots=1, ttl=1) is None

        await admission.release(permit)
        assert await others.claim("q.work.slots", "job-2", slots=1, ttl=1) == 1
    finally:
        renewing.cancel()


async def _never_waits(kind: LimitKind, detail: str) -> None:
    raise AssertionError(f"waited for {kind}: {detail}")


@pytest.mark.timeout(10)
async def test_a_job_canceled_while_it_waits_is_let_go_at_once_without_a_slot() -> None:
    log = await memory_log()
    await QueueBook(log).set_limits(
        "default", QueueLimits(key_concurrency=1), actor="key:ops", at=AT
    )
    registry = TaskRegistry()
    release_first = asyncio.Event()

    @registry.task("hold")
    async def hold(ctx: object, payload: dict[str, object]) -> None:
        await release_first.wait()

    async with running_worker(log, registry):
        first = await submit(log, "hold", concurrency_key="acme")
        await wait_for_kinds(log, first, "started")
        second = await submit(log, "hold", concurrency_key="acme")
        await wait_for_kinds(log, second, "throttled")

        # What POST /jobs/{id}/cancel does to a pending job.
        await log.command(second, lambda state, _: decide_cancel(state, actor="t", now=AT))
        await log.wait_until(
            lambda: len(log.pending(EVENT_STREAM, worker_consumer_name("default"))) == 1,
            timeout=3,
        )
        assert kinds(log, first) == ["submitted", "started"]  # the first still runs
        release_first.set()
        await wait_for_kinds(log, first, "succeeded")

    assert kinds(log, second) == ["submitted", "throttled", "cancel_requested", "canceled"]
    table = await SlotBook(log.connect()).holders("q.default.slots.acme")
    assert table == {}
