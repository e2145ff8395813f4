"""What operators do with dead letters: read one, redrive jobs, purge jobs.

``FQ_DLQ`` holds what is dead *now* (the original message of each dead-lettered job, with its
lineage in ``Fq-*`` headers); the event log keeps the history. So each action is an event
naming who did it, appended to the job's log, and then the job's dead letter is removed:

* **redrive**: ``redriven`` (attempt = the attempts made so far): the job is pending again,
  and as ``redriven`` is a runnable event the queue's workers run it at once;
* **purge**: ``purged``: the job stays ``failed`` for good and leaves the dead letters.

Each job is decided (:func:`~ferrisqueue.domain.commands.decide_redrive`, ``decide_purge``) on its
own history read from the log, never on the read store (which may lag): a job that is not
dead-lettered is skipped with the reason, never failing the batch. The append is guarded by
the job's last sequence (:meth:`EventLog.command`), so an action racing another (two
operators, a worker) lands once or is decided again on the new history. The removal here is
the fast path; it also follows from the event itself (the scheduler's
:mod:`scheduler.dead_letter_sweeper`), so a crash between the event and the removal is
finished there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ferrisqueue.domain.commands import Decision, decide_purge, decide_redrive
from ferrisqueue.domain.events import BaseEvent, utcnow
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.subjects import DLQ_STREAM, dlq_subject
from ferrisqueue.errors import ConcurrentChange
from ferrisqueue.log.eventlog import Decide, EventLog
from ferrisqueue.log.port import StoredMessage

MAX_BATCH = 1000
"""The most jobs one redrive or purge acts on; select more with repeated calls."""

_CONCURRENCY = 16  # jobs handled at once: each costs a few round trips to the server

Action = Literal["redriven", "purged"]


DeadLetterMessage = StoredMessage
"""A job's message as ``FQ_DLQ`` keeps it (its lineage in the ``Fq-*`` headers)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an action did to one job: ``redriven`` / ``purged``, or ``skipped`` and why."""

    job_id: str
    queue: str | None
    outcome: Action | Literal["skipped"]
    why: str | None = None


class DeadLetterQueue:
    """The ``FQ_DLQ`` stream: read and remove a job's dead letter."""

    def __init__(self, event_log: EventLog) -> None:
        self._log = event_log

    async def get(self, queue: str, job_id: str) -> DeadLetterMessage | None:
        """The job's newest dead letter, or ``None``."""
        return await self._log.read(DLQ_STREAM, dlq_subject(queue, job_id))

    async def remove(self, queue: str, job_id: str) -> None:
        """Purge the job's dead letter(s) from ``FQ_DLQ`` (nothing to remove is fine)."""
        await self._log.purge(dlq_subject(queue, job_id), stream=DLQ_STREAM)


async def act(
    action: Action,
    event_log: EventLog,
    dlq: DeadLetterQueue,
    job_ids: Iterable[str],
    *,
    actor: str,
    reason: str | None = None,
) -> list[Outcome]:
    """Redrive (``redriven``: back to their queues) or purge (``purged``: out of the dead
    letters for good, still ``failed``) the jobs; one :class:`Outcome` per job, in order."""

    def decide(state: JobState | None, history: Sequence[BaseEvent]) -> Decision[Any]:
        if action == "redriven":
            return decide_redrive(state, history, actor=actor, reason=reason, now=utcnow())
        return decide_purge(state, actor=actor, reason=reason, now=utcnow())

    return await _act(event_log, dlq, job_ids, action, decide, actor)


async def _act(
    event_log: EventLog,
    dlq: DeadLetterQueue,
    job_ids: Iterable[str],
    action: Action,
    decide: Decide[Any],
    actor: str,
) -> list[Outcome]:
    if not actor.strip():
        raise ValueError("say who acts: `actor` must not be empty")
    unique = list(dict.fromkeys(job_ids))
    if len(unique) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} jobs per call, got {len(unique)}")
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(job_id: str) -> Outcome:
        async with limit:
            return await _act_on_job(event_log, dlq, job_id, action, decide)

    # A task group, not gather: when one job fails (NATS went away) the others stop too,
    # rather than acting on after the caller was told the batch failed.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(job_id)) for job_id in unique]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def _act_on_job(
    event_log: EventLog, dlq: DeadLetterQueue, job_id: str, action: Action, decide: Decide[Any]
) -> Outcome:
    queue: str | None = None

    def deciding(state: JobState | None, history: Sequence[BaseEvent]) -> Decision[Any]:
        nonlocal queue  # for the answer if the job keeps changing
        queue = state.queue if state else queue
        return decide(state, history)

    try:
        result = await event_log.command(job_id, deciding)
    except ConcurrentChange:
        return Outcome(job_id, queue, "skipped", "the job kept changing while we acted; try again")
    state = result.state
    if (rejection := result.rejection) is not None:
        return Outcome(job_id, state.queue if state else None, "skipped", rejection.reason)
    assert state is not None  # a job the log does not know is rejected
    (stored,) = result.appended
    if stored.duplicate:
        # JetStream answered with an earlier message: an event with the same key was
        # already stored inside the duplicate window, so nothing changed now.
        return Outcome(
            job_id,
            state.queue,
            "skipped",
            f"the log already holds this {action} event from the last 2 minutes "
            f"(seq {stored.seq}); try again later",
        )
    await dlq.remove(state.queue, job_id)
    return Outcome(job_id, state.queue, action)
