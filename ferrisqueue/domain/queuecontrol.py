"""Queue controls: operator actions on a whole queue (pause and resume), as events.

Queue events are not job events: they live in their own stream (``FQ_CONTROLS``, subjects
``fq.queue.<queue>.<event>``), which keeps every one (the audit) and whose newest message
on ``fq.queue.<queue>.*`` is the queue's state. Workers read that state at start and
re-read it when notified; a later control (limits, say) adds an event kind here and a field
to :class:`QueueState`. Pure: no clock, no I/O.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.domain.ids import is_token
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
    """One pause or resume: of which queue, by whom, when, and why (optional)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    queue: str
    event: QueueEventKind
    actor: str
    at: datetime
    reason: str | None = Field(default=None, max_length=500)

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
    """A queue's control state: the fold of its events (only the newest matters today)."""

    model_config = ConfigDict(frozen=True)

    queue: str
    paused: bool = False
    changed_by: str | None = None
    """Who last paused or resumed it (None: never)."""
    changed_at: datetime | None = None
    seq: int = 0
    """The stream sequence of the event this state is as of (0: none yet)."""


def fold_queue(queue: str, events: list[tuple[int, QueueEvent]]) -> QueueState:
    """The state of ``queue`` after ``events`` (stream sequence, event), in any order: the
    event with the highest sequence wins, so a late-read older event never undoes a newer
    one."""
    state = QueueState(queue=queue)
    for seq, event in sorted(events, key=lambda pair: pair[0]):
        if event.queue != queue or seq <= state.seq:
            continue
        state = QueueState(
            queue=queue,
            paused=event.event is QueueEventKind.PAUSED,
            changed_by=event.actor,
            changed_at=event.at,
            seq=seq,
        )
    return state
