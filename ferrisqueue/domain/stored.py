"""A message of the event log as stored: its stream sequence, subject, storage time and
bytes, with the event it decodes to (or why it does not). Pure: the log adapter delivers or
reads the messages; the fold, the audit trail, the commands and the projections read these."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ferrisqueue.domain.events import Event, decode_event
from ferrisqueue.domain.fold import JobState, fold
from ferrisqueue.errors import DecodeError


class Message(Protocol):
    """What a stored or delivered message tells of itself (the log port's messages)."""

    @property
    def seq(self) -> int: ...

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def stored_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One message of the event log: its stream sequence, and the event or why it isn't one."""

    seq: int
    subject: str
    stored_at: datetime
    data: bytes
    event: Event | None
    error: DecodeError | None

    @classmethod
    def decode(
        cls,
        seq: int,
        subject: str,
        data: bytes,
        stored_at: datetime,
        headers: Mapping[str, str] | None = None,
    ) -> StoredEvent:
        """``headers``: the message's, for the actor a plain-NATS producer claims."""
        try:
            return cls(
                seq,
                subject,
                stored_at,
                data,
                decode_event(subject, data, stored_at=stored_at, headers=headers),
                None,
            )
        except DecodeError as exc:
            return cls(seq, subject, stored_at, data, None, exc)

    @classmethod
    def of(cls, message: Message) -> StoredEvent:
        """A delivered or read message as a :class:`StoredEvent`."""
        # Headers are optional to the protocol: some callers hand in bare messages.
        headers: Mapping[str, str] | None = getattr(message, "headers", None)
        return cls.decode(message.seq, message.subject, message.data, message.stored_at, headers)


def fold_history(history: Iterable[StoredEvent]) -> JobState | None:
    """A job's state from its stored messages (undecodable ones change nothing)."""
    return fold(stored.event for stored in history if stored.event is not None)
