"""Queue pause and resume: the pure fold, the book's guarded writes (on the in-memory log
with the shipped topology) and the worker's gate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ferrisqueue.domain.queuecontrol import (
    QueueEvent,
    QueueEventKind,
    fold_queue,
    parse_queue_subject,
    queue_subject,
)
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.queuebook import QueueBook
from ferrisqueue.log.topology import worker_consumer_name
from tests.support.memory import kinds, memory_log, running_worker, submit, wait_for_kinds
from worker.pause import QueueGates
from worker.registry import TaskRegistry

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _event(kind: QueueEventKind, actor: str = "key:alice", queue: str = "work") -> QueueEvent:
    return QueueEvent(queue=queue, event=kind, actor=actor, at=AT)


def test_a_queue_with_no_events_is_active() -> None:
    state = fold_queue("work", [])

    assert not state.paused and state.changed_by is None and state.seq == 0


def test_the_newest_event_wins_whatever_order_they_are_read_in() -> None:
    events = [
        (7, _event(QueueEventKind.RESUMED, "key:bob")),
        (3, _event(QueueEventKind.PAUSED, "key:alice")),
    ]

    state = fold_queue("work", events)

    assert (state.paused, state.changed_by, state.seq) == (False, "key:bob", 7)


def test_another_queues_events_do_not_count() -> None:
    state = fold_queue("work", [(1, _event(QueueEventKind.PAUSED, queue="other"))])

    assert not state.paused


def test_subjects_round_trip_and_refuse_what_is_not_a_queue_event() -> None:
    assert parse_queue_subject(queue_subject("work", QueueEventKind.PAUSED)) == (
        "work",
        QueueEventKind.PAUSED,
    )
    with pytest.raises(ValueError):
        parse_queue_subject("fq.job.work.x.paused")
    with pytest.raises(ValueError):
        queue_subject("no.dots", QueueEventKind.PAUSED)


@pytest.mark.timeout(10)
async def test_pausing_twice_records_one_event_and_history_names_who() -> None:
    book = QueueBook(await memory_log())

    first = await book.pause("work", actor="key:alice", at=AT)
    again = await book.pause("work", actor="key:bob", at=AT)
    resumed = await book.resume("work", actor="key:carol", at=AT, reason="fixed")

    assert first.paused and again == first
    assert not resumed.paused and resumed.changed_by == "key:carol"
    history = await book.history("work")
    assert [(e.event, e.actor, e.reason) for _, e in history] == [
        (QueueEventKind.PAUSED, "key:alice", None),
        (QueueEventKind.RESUMED, "key:carol", "fixed"),
    ]
    assert list(await book.states()) == ["work"]


@pytest.mark.timeout(10)
async def test_a_gate_holds_a_paused_queue_until_it_is_resumed() -> None:
    log = await memory_log()
    book = QueueBook(log)
    await book.pause("work", actor="key:alice", at=AT)
    gates = QueueGates(log.connect(), ["work", "other"])
    await gates.load()

    await gates.open_for("other")  # not paused: at once
    waiting = asyncio.create_task(gates.open_for("work"))
    await asyncio.sleep(0)  # let it reach the gate (no time passes)
    assert gates.paused("work") and gates.holding("work") and not waiting.done()

    await book.resume("work", actor="key:bob", at=AT)
    assert await gates.refresh()
    await asyncio.wait_for(waiting, 2)
    assert not gates.holding("work")


@pytest.mark.timeout(10)
async def test_a_worker_started_on_a_paused_queue_takes_nothing_until_resumed() -> None:
    log = await memory_log()
    book = QueueBook(log)
    await book.pause("default", actor="key:alice", at=AT)
    job = await submit(log)
    registry = TaskRegistry()
    runs: list[str] = []

    @registry.task("echo")
    async def echo(ctx: object, payload: dict[str, object]) -> None:
        runs.append("ran")

    async with running_worker(log, registry) as running:
        await running.worker.gates_ready.wait()
        assert running.worker.gates is not None
        await asyncio.wait_for(running.worker.gates.held("default"), 2)
        log.advance(120)  # past every AckWait: nothing was delivered, so nothing comes back
        assert kinds(log, job) == ["submitted"]
        assert log.pending(EVENT_STREAM, worker_consumer_name("default")) == {}

        await book.resume("default", actor="key:bob", at=AT)
        history = await wait_for_kinds(log, job, "succeeded")

    assert history == ["submitted", "started", "succeeded"]
    assert runs == ["ran"]
