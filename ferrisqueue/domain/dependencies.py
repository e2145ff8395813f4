"""Job dependencies: when a job that waits for its parents may run, and the order a batch
of jobs that refer to each other is stored in. Pure, like the fold and the commands.

A job created ``awaiting`` (``depends_on``: its parents' ids) is pending for
``dependencies`` until the scheduler decides (:func:`decide_dependencies`, carried out by
:meth:`EventLog.command <ferrisqueue.log.eventlog.EventLog.command>`):

* every parent ``completed``: ``released`` (attempt 0), and the job runs once;
* a parent ``failed`` (for good: its last attempt failed, or it was dead-lettered) or
  ``canceled``, or unknown to the log: ``canceled``, the reason naming that parent. The
  child's ``canceled`` in turn settles its own children (a cascade);
* otherwise: still waiting (a rejection; nothing is appended).

A parent that failed for good and is redriven later does not bring a canceled child back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ferrisqueue.domain.commands import Decision, Rejection
from ferrisqueue.domain.events import (
    SCHEDULER_ACTOR,
    Awaiting,
    BaseEvent,
    Canceled,
    Dependent,
    Released,
    Settled,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus, PendingReason
from ferrisqueue.domain.subjects import DEFAULT_PRIORITY
from ferrisqueue.errors import FerrisQueueError

NOT_WAITING = "the job does not wait for dependencies"


def has_children(history: Iterable[BaseEvent | None]) -> bool:
    """Whether a job's history notes a child that waits for it (a ``dependent`` note)."""
    return any(isinstance(event, Dependent) for event in history)


def settled(job: BaseEvent, *, actor: str, now: datetime) -> Settled:
    """The note that ``job`` ended with children waiting, for the dependency gate. Whoever
    records a job's end writes it once they know of a ``dependent`` note that came before
    the end; a note that comes after the end is decided at once by the gate, which reads the
    parent ended (so between the two, no child is left waiting)."""
    return Settled(job_id=job.job_id, queue=job.queue, at=now, actor=actor)


def parents_of(history: Sequence[BaseEvent]) -> list[str]:
    """The parents the job's creation names (none for a job that was not ``awaiting``)."""
    creation = next((e for e in history if isinstance(e, Awaiting)), None)
    return list(creation.depends_on) if creation is not None else []


def decide_dependencies(
    state: JobState | None,
    history: Sequence[BaseEvent],
    *,
    parents: Mapping[str, JobState | None],
    now: datetime,
) -> Decision[Released | Canceled]:
    """What the parents' states (``parents``, by id; ``None``: the log does not know it)
    mean for a job waiting for them: ``released``, ``canceled`` naming the parent that will
    never succeed, or a rejection (it still waits, or waits no more)."""
    if state is None or state.status is not JobStatus.PENDING:
        return Rejection(NOT_WAITING)
    if state.pending_reason is not PendingReason.DEPENDENCIES or state.cancel_requested:
        return Rejection(NOT_WAITING)
    waiting = []
    for parent in parents_of(history):
        parent_state = parents.get(parent)
        why = _never(parent, parent_state)
        if why is not None:
            return (
                Canceled(
                    job_id=state.job_id,
                    queue=state.queue,
                    at=now,
                    reason=why,
                    actor=SCHEDULER_ACTOR,
                ),
            )
        if parent_state is None or parent_state.status is not JobStatus.COMPLETED:
            waiting.append(parent)
    if waiting:
        return Rejection(f"still waiting for {', '.join(waiting)}")
    creation = next((e for e in history if isinstance(e, Awaiting)), None)
    released = Released(
        job_id=state.job_id,
        queue=state.queue,
        at=now,
        attempt=0,
        actor=SCHEDULER_ACTOR,
        priority=creation.priority if creation is not None else DEFAULT_PRIORITY,  # its lane
    )
    return (released,)


def _never(parent: str, state: JobState | None) -> str | None:
    """Why ``parent`` will never succeed, or None while it still may (or did)."""
    if state is None:
        return f"parent {parent} does not exist"
    if state.status is JobStatus.FAILED:
        return f"parent {parent} failed: {state.last_error or 'no error recorded'}"[:1000]
    if state.status is JobStatus.CANCELED:
        return f"parent {parent} was canceled"
    return None


class DependencyCycle(FerrisQueueError):
    """Jobs of one batch that depend on each other in a circle; ``members`` are their
    indexes in the batch."""

    def __init__(self, members: Sequence[int]) -> None:
        path = " -> ".join(f"#{i}" for i in (*members, members[0]))
        super().__init__(f"the batch's dependencies form a cycle: {path}")
        self.members = list(members)


def waves(after: Sequence[Sequence[int]]) -> list[list[int]]:
    """The items of a batch in waves to store them in: each item after every item it depends
    on (``after[i]``: the indexes item ``i`` depends on), so a child is never stored before a
    parent of the same batch. :class:`DependencyCycle` when some never can be."""
    done: set[int] = set()
    left = list(range(len(after)))
    order: list[list[int]] = []
    while left:
        wave = [i for i in left if all(j in done for j in after[i])]
        if not wave:
            raise DependencyCycle(_a_cycle(after, set(left)))
        order.append(wave)
        done.update(wave)
        left = [i for i in left if i not in done]
    return order


def _a_cycle(after: Sequence[Sequence[int]], stuck: set[int]) -> list[int]:
    """One cycle among ``stuck`` items (every one of which depends on another stuck one)."""
    path: list[int] = []
    node = min(stuck)
    while node not in path:
        path.append(node)
        node = min(j for j in after[node] if j in stuck)
    return path[path.index(node) :]
