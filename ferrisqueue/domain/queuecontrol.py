"""Queue controls: operator actions on a whole queue (pause and resume, its limits), as
events.

Queue events are not job events: they live in their own stream (``FQ_CONTROLS``, subjects
``fq.queue.<queue>.<event>``), which keeps every one (the audit). The queue's state is the
newest event of each aspect: ``paused`` / ``resumed`` say whether it is paused, ``limits``
what its limits are (:mod:`ferrisqueue.domain.limits`). Workers read that state at start and
re-read it when notified. Pure: no clock, no I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.limits import UNLIMITED, QueueLimits
from ferrisqueue.errors import DecodeError

CONTROL_STREAM = "FQ_CONTROLS"
"""The stream of queue events (every one kept)."""

QUEUE_SUBJECT_PREFIX = "fq.queue"


class QueueEventKind(StrEnum):
    """What an operator did to a queue; the last token of the event's subject."""

    PAUSED = "paused"
    """Workers stop starting the queue's jobs (running ones finish; submits are accepted)."""
    RESUMED = "resumed"
    """Workers start the queue's jobs again, from where they stopped."""
    LIMITS = "limits"
    """The queue's concurrency and rate limits were set (all of them: unset is unlimited)."""


PAUSE_KINDS = (QueueEventKind.PAUSED, QueueEventKind.RESUMED)


def queue_subject(queue: str, kind: QueueEventKind | str) -> str:
    """The subject of one queue event; ``kind="*"`` for every event of the queue."""
    if not is_token(queue):
        raise ValueError(f"invalid queue name {queue!r}")
    return f"{QUEUE_SUBJECT_PREFIX}.{queue}.{kind}"


def parse_queue_subject(subject: str) -> tuple[str, QueueEventKind]:
    """The queue and event kind of a queue-event subject; ``ValueError`` if not one."""
    parts = subject.split(".")
    if len(parts) != 4 or ".".join(parts[:2]) != QUEUE_SUBJECT_PREFIX:
        raise ValueError(f"not a queue-event subject: {subject!r}")
    return parts[2], QueueEventKind(parts[3])


class QueueEvent(BaseModel):
    """One pause, resume or setting of limits: of which queue, by whom, when, and why
    (optional); a ``limits`` event carries the limits."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    queue: str
    event: QueueEventKind
    actor: str
    at: datetime
    reason: str | None = Field(default=None, max_length=500)
    limits: QueueLimits | None = None

    @property
    def subject(self) -> str:
        return queue_subject(self.queue, self.event)

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def decode_queue_event(subject: str, data: bytes) -> QueueEvent:
    """A stored queue event; :class:`~ferrisqueue.errors.DecodeError` if it is not one."""
    try:
        return QueueEvent.model_validate_json(data)
    except ValueError as exc:
        raise DecodeError(f"not a queue event: {exc}", subject=subject, data=data) from exc


class QueueState(BaseModel):
    """A queue's control state: the fold of its events (the newest of each aspect)."""

    model_config = ConfigDict(frozen=True)

    queue: str
    paused: bool = False
    changed_by: str | None = None
    """Who last paused or resumed it (None: never)."""
    changed_at: datetime | None = None
    limits: QueueLimits = UNLIMITED
    limits_by: str | None = None
    """Who last set its limits (None: never)."""
    limits_at: datetime | None = None
    seq: int = 0
    """The stream sequence of the newest event this state is as of (0: none yet)."""


def apply_queue_event(state: QueueState, seq: int, event: QueueEvent) -> QueueState:
    """``state`` after ``event`` stored at ``seq``; unchanged if the event is of another
    queue or not newer than the state."""
    if event.queue != state.queue or seq <= state.seq:
        return state
    changes: dict[str, Any]
    if event.event is QueueEventKind.LIMITS:
        changes = {"limits": event.limits or UNLIMITED, "limits_by": event.actor}
        changes["limits_at"] = event.at
    else:
        changes = {"paused": event.event is QueueEventKind.PAUSED, "changed_by": event.actor}
        changes["changed_at"] = event.at
    return state.model_copy(update={**changes, "seq": seq})


def fold_queue(queue: str, events: list[tuple[int, QueueEvent]]) -> QueueState:
    """The state of ``queue`` after ``events`` (stream sequence, event), in any order: of
    each aspect the event with the highest sequence wins, so a late-read older event never
    undoes a newer one."""
    state = QueueState(queue=queue)
    for seq, event in sorted(events, key=lambda pair: pair[0]):
        state = apply_queue_event(state, seq, event)
    return state
