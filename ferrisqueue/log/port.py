"""The log port: what FerrisQueue needs from the log it is built on, and nothing of the library.

Every service talks to the log through this port (and :class:`~ferrisqueue.log.eventlog.EventLog`,
which adds the event-level operations on top of it). Two implementations exist:

* :class:`ferrisqueue.log.natslog.NatsLog`, the adapter over nats-py and JetStream, which the
  services run on;
* :class:`ferrisqueue.log.memlog.MemoryLog`, an in-memory log with the same behaviour and a clock
  a test controls, on which the worker, the scheduler's loops and the projector are unit
  tested in milliseconds (dramatiq's ``StubBroker`` is the model).

The port speaks JetStream's vocabulary because that is what the system is designed around:
streams with sequences, subject filters with ``*`` and ``>``, the publish headers below, and
durable pull consumers whose deliveries are acked, nak'd (with a delay), terminated or kept
leased (``in_progress``) and come back after their AckWait. What a method may raise is
:mod:`ferrisqueue.errors` only: library errors are translated inside the adapter.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ferrisqueue.runloop import reap

T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"
"""Deduplication: a second message with the same id within the stream's duplicate window is
not stored, and the publish answers with the first one's sequence."""
EXPECTED_STREAM = "Nats-Expected-Stream"
"""Refuse the message unless this stream is the one that stores it."""
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
"""Optimistic concurrency: store the message only if the newest message on its subject (or on
:data:`EXPECTED_LAST_SUBJECT_SEQ_SUBJECT`) is at this sequence (0: there is none); else
:class:`~ferrisqueue.errors.ConcurrentChange`. Checked before the duplicate window."""
EXPECTED_LAST_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
"""The subject filter :data:`EXPECTED_LAST_SUBJECT_SEQ` is checked over (a job's history)."""

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed :data:`EXPECTED_LAST_SUBJECT_SEQ` guard."""
WRONG_STREAM = 10060
"""JetStream's error code for a failed :data:`EXPECTED_STREAM` check."""


def header_bytes(headers: Mapping[str, str]) -> int:
    """What ``headers`` add to a message's size, as the server counts it: ``NATS/1.0``, one
    ``name: value`` line each, a blank line."""
    lines = sum(len(f"{name}: {value}\r\n".encode()) for name, value in headers.items())
    return len(b"NATS/1.0\r\n\r\n") + lines


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as a stream holds it."""

    subject: str
    seq: int
    stored_at: datetime
    headers: dict[str, str]
    data: bytes


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a durable consumer has not finished: JetStream's ``num_pending`` and
    ``num_ack_pending``."""

    pending: int
    """Messages of the stream it has not delivered yet (for a worker: jobs waiting)."""
    ack_pending: int
    """Messages delivered and not acked yet (for a worker: jobs running, or leased)."""


@dataclass(slots=True, eq=False)
class Delivery(ABC):
    """A message a durable consumer delivered: where it sits in its stream, how often it came,
    and how to settle it. Until it is acked (or terminated) the consumer delivers it again
    once its AckWait has passed."""

    seq: int
    """Its stream sequence."""
    deliveries: int
    """1 on the first delivery, more on each redelivery."""
    subject: str
    data: bytes
    headers: Mapping[str, str] | None
    stored_at: datetime

    @property
    def backlog_after(self) -> int | None:
        """How many messages its consumer still had to deliver after this one (JetStream
        says so in every delivery's ack subject), if known."""
        return None

    @abstractmethod
    async def ack(self) -> None:
        """Done with it (on an AckAll consumer: with every earlier delivery too)."""

    @abstractmethod
    async def nak(self, delay: float | None = None) -> None:
        """Deliver it again, at once or after ``delay`` seconds."""

    @abstractmethod
    async def term(self, reason: str | None = None) -> None:
        """Never deliver it again (poison); the message stays in its stream."""

    @abstractmethod
    async def in_progress(self) -> None:
        """Still working on it: its AckWait starts again (the job's lease)."""


RequestSize = Callable[[], Awaitable[int]]
"""How many messages to ask for next (it may wait, e.g. for free worker slots)."""
Unused = Callable[[int], None]
"""Gets back the part of a pull request that was not delivered."""


def ignore(_unused: int) -> None:
    """An :data:`Unused` for a consumer that keeps no count of what it asked for."""


@dataclass(frozen=True, slots=True)
class Pulling:
    """How a consumer is pulled from (see :mod:`ferrisqueue.log.puller`)."""

    expires: float = 1.0
    """Seconds one pull request waits for messages."""
    linger: float = 0.0
    """Seconds a burst waits to fill up after its first message (0 for a worker, which
    wants each job at once; a little for a projector, which writes one transaction per
    burst)."""
    no_wait: bool = False
    """Ask only for what is there now: a request ends at once when the consumer has
    nothing (JetStream's ``no_wait``), instead of waiting ``expires`` for work."""
    give_up_after: float | None = None
    """Seconds of pull requests nobody answers (the consumer has no leader, or is gone)
    after which pulling raises :class:`~ferrisqueue.errors.NatsUnavailable`; None: keep
    asking."""


PULLING = Pulling()


class Consumer(Protocol):
    """Bursts of deliveries from one durable pull consumer (see :mod:`ferrisqueue.log.puller`)."""

    async def start(self) -> None: ...

    def bursts(
        self, stopping: asyncio.Event, *, request_size: RequestSize, unused: Unused = ...
    ) -> AsyncIterator[list[Delivery]]:
        """Yield bursts until ``stopping`` is set. ``request_size`` says how many to ask for
        next (it may wait); ``unused`` gets back what a request did not deliver."""
        ...

    async def stop(self) -> list[Delivery]:
        """Stop; returns the deliveries that arrived but were never handed over."""
        ...


Watcher = Callable[[str, bytes], Awaitable[None]]
"""Called with the subject and body of each message published on a watched subject."""


class LogPort(ABC):
    """Streams of messages and durable consumers on them: the primitives FerrisQueue uses.

    Publishing, reading and purging, the streams' and consumers' definitions (the JetStream
    JSON in ``ferrisqueue/log/jetstream``, applied by :mod:`ferrisqueue.log.topology`), pull
    consumers, and a plain (not durable) watch of stored subjects."""

    creates_topology: bool = True
    """Whether this log's services create their streams and consumers at start (as today on
    a server without users), or only check that ``fq init`` did (a NATS role, which is not
    allowed to change them): :func:`ferrisqueue.log.topology.prepare_streams`."""

    @property
    @abstractmethod
    def connected(self) -> bool:
        """Whether the log can be reached right now."""

    @property
    @abstractmethod
    def max_payload(self) -> int:
        """The largest message (body and headers) the log accepts."""

    @abstractmethod
    async def store(
        self, subject: str, data: bytes, *, headers: Mapping[str, str], stream: str
    ) -> int:
        """Publish one message and wait until it is stored; returns its stream sequence
        (the earlier one for a duplicate :data:`MSG_ID`). ``stream`` is the stream expected
        to store it (for error messages; :meth:`publish` also makes the log check it).

        Raises :class:`~ferrisqueue.errors.NatsUnavailable` (not stored: no connection, no
        stream takes the subject), :class:`~ferrisqueue.errors.PublishRejected` (refused,
        :class:`~ferrisqueue.errors.ConcurrentChange` for a failed guard),
        :class:`~ferrisqueue.errors.PayloadTooLarge`, or
        :class:`~ferrisqueue.errors.PublishOutcomeUnknown` (maybe stored)."""

    async def publish(
        self, subject: str, data: bytes, *, stream: str, headers: Mapping[str, str]
    ) -> int:
        """Publish one message to ``stream`` and wait for it to be stored; returns its
        sequence. Refused if another stream would store it. Errors as :meth:`store`."""
        return await self.store(
            subject, data, headers=_sent_headers(headers, stream), stream=stream
        )

    def body_room(self, *, stream: str, headers: Mapping[str, str]) -> int:
        """The largest body :meth:`publish` can send to ``stream`` with ``headers``."""
        return self.max_payload - header_bytes(_sent_headers(headers, stream))

    @abstractmethod
    async def read(
        self, stream: str, subject: str, *, from_seq: int | None = None
    ) -> StoredMessage | None:
        """The last message on ``subject`` (a filter) in ``stream``, or with ``from_seq`` the
        first one at or after that sequence; ``None`` when there is none."""

    @abstractmethod
    async def purge(self, subject: str, *, stream: str, before_seq: int | None = None) -> None:
        """Remove every message on ``subject`` from ``stream`` (nothing there is no error);
        with ``before_seq``, only those stored before that sequence."""

    @abstractmethod
    async def last_seq(self, stream: str) -> int:
        """The sequence of the newest message in ``stream`` (0 when empty)."""

    @abstractmethod
    async def subjects(self, stream: str, subject: str) -> set[str]:
        """The subjects matching the filter ``subject`` that hold a message in ``stream``."""

    @abstractmethod
    async def ensure_stream(self, config: Mapping[str, Any]) -> None:
        """Create the stream ``config`` defines, or update it to that definition. Without
        ``num_replicas`` a new stream gets 1 and an existing one keeps the count it has."""

    @abstractmethod
    async def ensure_consumer(self, stream: str, config: Mapping[str, Any]) -> None:
        """Create the durable consumer ``config`` defines, or update it in place."""

    @abstractmethod
    async def has_stream(self, name: str) -> bool:
        """Whether the stream ``name`` exists."""

    @abstractmethod
    async def consumer_definition(self, stream: str, name: str) -> dict[str, Any] | None:
        """The configuration of the durable consumer ``name`` on ``stream``, None if there
        is none."""

    @abstractmethod
    async def delete_consumer(self, stream: str, name: str) -> None:
        """Remove a durable consumer (one that does not exist is no error)."""

    @abstractmethod
    def consumer(self, stream: str, name: str, pulling: Pulling = PULLING) -> Consumer:
        """Pull from the durable consumer ``name``. ``expires``: how long one pull request
        waits for messages; ``linger``: how long a burst waits to fill up after its first
        message; ``give_up_after``: seconds of pull requests nobody answers (the consumer
        has no leader, or is gone) after which pulling raises
        :class:`~ferrisqueue.errors.NatsUnavailable`, None to keep asking (see
        :mod:`ferrisqueue.log.puller`)."""

    @abstractmethod
    async def backlogs(self, stream: str) -> dict[str, Backlog]:
        """Every durable consumer of ``stream``, by name, with what it has not finished."""

    @abstractmethod
    async def watch(self, subject: str, watcher: Watcher) -> None:
        """Call ``watcher`` for each message stored on ``subject`` from now on, best effort:
        one published while the connection is down is missed (not a durable consumer)."""

    @abstractmethod
    async def close(self) -> None:
        """Flush what is buffered and let go of the log."""


def _sent_headers(headers: Mapping[str, str], stream: str) -> dict[str, str]:
    """``headers`` as published: the log refuses the message unless ``stream`` stores it."""
    return {**headers, EXPECTED_STREAM: stream}


async def unless_stopped(work: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """``await work``, or None as soon as ``stopping`` is set (the wait is cancelled). What
    a consumer waits on (free slots, the next messages) must not outlast a stop."""
    sizing = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait((sizing, stop), return_when=asyncio.FIRST_COMPLETED)
    for waiting in (stop, sizing):
        if not waiting.done():
            await reap(waiting)
    return None if sizing.cancelled() else sizing.result()
