"""Job dependencies, pure parts and the scheduler's gate on the in-memory log: the
``awaiting`` creation and the ``dependent`` note in the fold, the decision table, a batch's
store order and cycles, and the gate releasing a child once (parent finished before or
after the child was registered), cancelling it (and its children) when a parent fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ferrisqueue.domain.commands import Rejection
from ferrisqueue.domain.dependencies import DependencyCycle, decide_dependencies, waves
from ferrisqueue.domain.events import (
    Awaiting,
    Canceled,
    Dependent,
    Failed,
    Released,
    Started,
    Submitted,
    Succeeded,
    decode_event,
    utcnow,
)
from ferrisqueue.domain.fold import fold
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.jobbuilder import JobRefused, build_job
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.domain.stored import fold_history
from ferrisqueue.errors import DecodeError
from ferrisqueue.log.memlog import MemoryLog
from scheduler.dependencies import DependencyGate
from tests.support.memory import WAIT, kinds, memory_log, serving, submit, wait_for_kinds

pytestmark = pytest.mark.timeout(10)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def awaiting(job_id: str = "child", *parents: str) -> Awaiting:
    return Awaiting(
        job_id=job_id, queue="q", at=NOW, type="echo", depends_on=list(parents or ["a"])
    )


def finished(job_id: str, outcome: str) -> Any:
    events: list[Any] = [Submitted(job_id=job_id, queue="q", at=NOW, type="echo")]
    events.append(Started(job_id=job_id, queue="q", at=NOW, attempt=1, worker="w"))
    if outcome == "succeeded":
        events.append(Succeeded(job_id=job_id, queue="q", at=NOW, attempt=1, duration_ms=1))
    elif outcome == "failed":
        events.append(
            Failed(job_id=job_id, queue="q", at=NOW, attempt=1, error="boom", error_type="x")
        )
    elif outcome == "canceled":
        events.append(Canceled(job_id=job_id, queue="q", at=NOW))
    return fold(events)


def test_an_awaiting_job_is_pending_for_dependencies_until_released() -> None:
    state = fold([awaiting("child", "a", "b")])
    assert state is not None
    assert (state.status, state.pending_reason) == (JobStatus.PENDING, PendingReason.DEPENDENCIES)
    released = Released(job_id="child", queue="q", at=NOW, attempt=0)
    assert fold([awaiting(), released]).pending_reason is PendingReason.QUEUED  # type: ignore[union-attr]


def test_a_dependent_note_changes_nothing_even_on_a_finished_job() -> None:
    done = finished("a", "succeeded")
    note = Dependent(job_id="a", queue="q", at=NOW.replace(hour=13), child="child")
    after = fold([*_events_of_success("a"), note])
    assert after is not None and done is not None
    assert (after.status, after.updated_at) == (JobStatus.COMPLETED, done.updated_at)
    assert after.events_applied == done.events_applied + 1


def _events_of_success(job_id: str) -> list[Any]:
    return [
        Submitted(job_id=job_id, queue="q", at=NOW, type="echo"),
        Started(job_id=job_id, queue="q", at=NOW, attempt=1, worker="w"),
        Succeeded(job_id=job_id, queue="q", at=NOW, attempt=1, duration_ms=1),
    ]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ({"a": "succeeded", "b": "succeeded"}, "released"),
        ({"a": "succeeded", "b": "running"}, "still waiting for b"),
        ({"a": "succeeded", "b": "failed"}, "parent b failed: boom"),
        ({"a": "canceled", "b": "running"}, "parent a was canceled"),
        ({"a": "succeeded", "b": None}, "parent b does not exist"),
    ],
)
def test_the_parents_states_decide_the_child(
    outcomes: dict[str, str | None], expected: str
) -> None:
    child = awaiting("child", "a", "b")
    parents = {
        p: None if o is None else (finished(p, o) if o != "running" else _running(p))
        for p, o in outcomes.items()
    }
    decision = decide_dependencies(fold([child]), [child], parents=parents, now=NOW)
    if isinstance(decision, Rejection):
        assert decision.reason == expected
    elif expected == "released":
        assert decision == (
            Released(job_id="child", queue="q", at=NOW, attempt=0, actor="scheduler"),
        )
    else:
        (canceled,) = decision
        assert isinstance(canceled, Canceled)
        assert (canceled.reason, canceled.actor) == (expected, "scheduler")


def _running(job_id: str) -> Any:
    return fold(_events_of_success(job_id)[:2])


def test_a_job_no_longer_waiting_is_not_decided_again() -> None:
    child = awaiting("child", "a")
    released = Released(job_id="child", queue="q", at=NOW, attempt=0)
    decision = decide_dependencies(
        fold([child, released]),
        [child, released],
        parents={"a": finished("a", "succeeded")},
        now=NOW,
    )
    assert isinstance(decision, Rejection)


def test_parents_only_on_an_awaiting_event() -> None:
    body = b'{"type": "echo", "depends_on": ["p"], "at": "2026-12-04T12:00:00Z"}'
    with pytest.raises(DecodeError, match="created by an 'awaiting' event"):
        decode_event("fq.job.q.c.submitted", body)
    assert isinstance(decode_event("fq.job.q.c.awaiting", body), Awaiting)
    with pytest.raises(DecodeError, match="at least one parent"):
        decode_event("fq.job.q.c.awaiting", b'{"type": "echo", "at": "2026-12-04T12:00:00Z"}')
    with pytest.raises(DecodeError, match="itself"):
        decode_event("fq.job.q.c.awaiting", body.replace(b'"p"', b'"c"'))


def test_the_builder_makes_an_awaiting_job_and_refuses_a_start_time_with_parents() -> None:
    event = build_job({"type": "echo", "depends_on": ["a"]}, {}, job_id="c", now=NOW, actor="x")
    assert isinstance(event, Awaiting) and event.depends_on == ["a"]
    with pytest.raises(JobRefused, match="give no run_at or delay"):
        build_job(
            {"type": "echo", "depends_on": ["a"], "delay": 5}, {}, job_id="c", now=NOW, actor="x"
        )
    plain = build_job({"type": "echo"}, {}, job_id="c", now=NOW, actor="x")
    assert b"depends_on" not in plain.model_dump_json(exclude_none=True).encode()


def test_a_batch_is_stored_parents_first_and_a_cycle_is_named() -> None:
    # 0 -> 1, 0 -> 2, (1, 2) -> 3: the diamond
    assert waves([[], [0], [0], [1, 2]]) == [[0], [1, 2], [3]]
    with pytest.raises(DependencyCycle, match=r"#1 -> #2 -> #1"):
        waves([[], [2], [1]])


# --- the gate on the in-memory log ------------------------------------------------------


@pytest.fixture
async def log() -> MemoryLog:
    return await memory_log()


@pytest.fixture
async def gate(log: MemoryLog) -> AsyncIterator[DependencyGate]:
    async with serving(DependencyGate(log.connect())) as gate:
        yield gate


async def child_of(log: MemoryLog, *parents: str) -> str:
    job = new_job_id()
    await log.append(
        Awaiting(job_id=job, queue="default", at=utcnow(), type="echo", depends_on=list(parents))
    )
    return job


async def succeed(log: MemoryLog, job: str) -> None:
    """What a worker records when the job succeeds, ``settled`` included if a child waits."""
    await log.append(Started(job_id=job, queue="default", at=utcnow(), attempt=1, worker="w"))
    await log.append(Succeeded(job_id=job, queue="default", at=utcnow(), attempt=1, duration_ms=1))
    await log.announce_settled(job, actor="worker:w")


async def test_a_child_is_released_once_after_its_last_parent_succeeds(
    log: MemoryLog, gate: DependencyGate
) -> None:
    a, b = await submit(log), await submit(log)
    child = await child_of(log, a, b)
    await gate.signals.handled.reached(1, timeout=WAIT)
    await succeed(log, a)
    await gate.signals.handled.reached(2, timeout=WAIT)
    assert kinds(log, child) == ["awaiting"]
    await succeed(log, b)
    assert await wait_for_kinds(log, child, "released") == ["awaiting", "released"]
    assert kinds(log, a)[1] == "dependent"
    await gate.decide(child)  # a repeat (a redelivery, another instance) changes nothing
    assert kinds(log, child) == ["awaiting", "released"]


async def test_a_parent_that_succeeded_before_the_child_was_submitted_releases_it(
    log: MemoryLog, gate: DependencyGate
) -> None:
    a = await submit(log)
    await succeed(log, a)
    child = await child_of(log, a)
    assert await wait_for_kinds(log, child, "released") == ["awaiting", "released"]


async def test_a_failed_parent_cancels_the_child_and_its_children(
    log: MemoryLog, gate: DependencyGate
) -> None:
    a = await submit(log)
    child = await child_of(log, a)
    grandchild = await child_of(log, child)
    await gate.signals.handled.reached(2, timeout=WAIT)
    await log.append(Started(job_id=a, queue="default", at=utcnow(), attempt=1, worker="w"))
    await log.append(
        Failed(job_id=a, queue="default", at=utcnow(), attempt=1, error="boom", error_type="x")
    )
    await log.announce_settled(a, actor="worker:w")
    await wait_for_kinds(log, grandchild, "canceled")
    child_state = fold_history(await log.connect().history(child))
    grand_state = fold_history(await log.connect().history(grandchild))
    assert child_state is not None and grand_state is not None
    assert child_state.status is JobStatus.CANCELED
    assert grand_state.status is JobStatus.CANCELED
    reasons = [
        s.event.reason
        for job in (child, grandchild)
        for s in await log.connect().history(job)
        if isinstance(s.event, Canceled)
    ]
    assert reasons == [f"parent {a} failed: boom", f"parent {child} was canceled"]


async def test_an_unknown_parent_cancels_a_plain_nats_child(
    log: MemoryLog, gate: DependencyGate
) -> None:
    child = await child_of(log, "no-such-job")
    assert await wait_for_kinds(log, child, "canceled") == ["awaiting", "canceled"]
