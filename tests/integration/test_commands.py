"""``EventLog.command`` on a real nats-server: a decision lands only on the state it was
made on. Another writer appending between the read and the guarded append makes the command
read again and decide again; one that never stops makes it give up, not spin.

The other writer is put between the read and the append deterministically: the log's
``history`` read is wrapped so that it appends right after reading (no sleeps, no timing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

import pytest

from ferrisqueue.domain.commands import Decision, Rejection, decide_cancel, decide_start
from ferrisqueue.domain.events import (
    BaseEvent,
    CancelRequested,
    Progress,
    Started,
    Submitted,
    utcnow,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.errors import ConcurrentChange
from ferrisqueue.log.eventlog import COMMAND_TRIES, EventLog

pytestmark = pytest.mark.timeout(30)

QUEUE = "default"


async def submit(event_log: EventLog) -> tuple[Submitted, StoredEvent]:
    job = Submitted(job_id=new_job_id(), queue=QUEUE, at=utcnow(), type="echo")
    await event_log.append(job)
    (stored,) = await event_log.history(job.job_id)
    return job, stored


def interfere_after_reads(
    monkeypatch: pytest.MonkeyPatch,
    event_log: EventLog,
    writer: Callable[[int], Awaitable[None]],
    *,
    times: int,
) -> None:
    """Make the next ``times`` history reads each followed by ``writer(n)``: another writer
    appending after the command read the job and before it appends."""
    read = event_log.history
    calls = 0

    async def history(job_id: str) -> list[StoredEvent]:
        nonlocal calls
        found = await read(job_id)
        if calls < times:
            calls += 1
            await writer(calls)
        return found

    monkeypatch.setattr(event_log, "history", history)


class Recorder:
    """A ``decide`` that records the states it was asked about."""

    def __init__(self, decide: Callable[[JobState | None], Decision[BaseEvent]]) -> None:
        self.decide = decide
        self.seen: list[JobState | None] = []

    def __call__(
        self, state: JobState | None, _history: Sequence[BaseEvent]
    ) -> Decision[BaseEvent]:
        self.seen.append(state)
        return self.decide(state)


async def test_a_cancel_racing_a_workers_start_is_decided_again_on_the_running_job(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = await submit(event_log)

    async def worker_starts(_: int) -> None:
        await event_log.append(
            Started(job_id=job.job_id, queue=QUEUE, at=utcnow(), attempt=1, worker="w1")
        )

    interfere_after_reads(monkeypatch, event_log, worker_starts, times=1)
    decide = Recorder(lambda state: decide_cancel(state, actor="ops", now=utcnow()))

    result = await event_log.command(job.job_id, decide)

    # First decided on the pending job (request + cancel), refused by the guard; then on the
    # running one: only the request, which its worker acts on.
    assert [s.status if s else None for s in decide.seen] == [
        JobStatus.PENDING,
        JobStatus.RUNNING,
    ]
    assert [a.event.event for a in result.appended] == ["cancel_requested"]
    kinds = [s.event.event for s in await event_log.history(job.job_id) if s.event]
    assert kinds == ["submitted", "started", "cancel_requested"]
    final = fold_history(await event_log.history(job.job_id))
    assert final is not None and final.status is JobStatus.RUNNING and final.cancel_requested


async def test_a_stale_presumed_history_costs_a_read_never_a_wrong_event(
    event_log: EventLog,
) -> None:
    # A worker presumes the `submitted` it was delivered is all there is; a cancel came first.
    job, stored = await submit(event_log)
    await event_log.append(CancelRequested(job_id=job.job_id, queue=QUEUE, at=utcnow()))

    def decide(state: JobState | None, history: Sequence[BaseEvent]) -> Decision[Started]:
        return decide_start(
            state, history, job=job, attempt=1, trigger_seq=stored.seq, worker="w1", now=utcnow()
        )

    result = await event_log.command(job.job_id, decide, history=[stored])

    assert result.rejection == Rejection("a cancel was requested")
    assert result.appended == ()
    kinds = [s.event.event for s in await event_log.history(job.job_id) if s.event]
    assert kinds == ["submitted", "cancel_requested"]


async def test_a_job_that_keeps_changing_makes_the_command_give_up_after_its_tries(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, _ = await submit(event_log)
    first = utcnow()

    async def someone_asks_again(n: int) -> None:
        # A distinct time each: distinct dedup keys, so every one is stored.
        at = first + timedelta(milliseconds=n)
        await event_log.append(CancelRequested(job_id=job.job_id, queue=QUEUE, at=at))

    interfere_after_reads(monkeypatch, event_log, someone_asks_again, times=COMMAND_TRIES)
    progress = Progress(job_id=job.job_id, queue=QUEUE, at=utcnow(), attempt=1, fraction=0.5)
    decide = Recorder(lambda _state: (progress,))

    with pytest.raises(ConcurrentChange, match="kept changing"):
        await event_log.command(job.job_id, decide)

    assert len(decide.seen) == COMMAND_TRIES
    kinds = [s.event.event for s in await event_log.history(job.job_id) if s.event]
    assert kinds == ["submitted", *["cancel_requested"] * COMMAND_TRIES]  # nothing of ours


async def test_an_event_the_log_already_holds_is_reported_as_a_duplicate(
    event_log: EventLog,
) -> None:
    job, _ = await submit(event_log)
    progress = Progress(job_id=job.job_id, queue=QUEUE, at=utcnow(), attempt=1, fraction=0.5)
    seq = await event_log.append(progress)

    result = await event_log.command(job.job_id, lambda _state, _history: (progress,))

    (appended,) = result.appended
    assert appended.duplicate and appended.seq == seq
