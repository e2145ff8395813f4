"""Appending to and reading from the event log (the ``FQ_EVENTS`` stream).

This is the adapter between FerrisQueue and nats-py's JetStream API: it translates the
library's errors into :mod:`ferrisqueue.errors` so that callers can tell "definitely not
stored" (:class:`PublishRejected`, :class:`NatsUnavailable`) from "maybe stored"
(:class:`PublishOutcomeUnknown`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic

import nats.errors
import nats.js.errors
import pydantic_core
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from ferrisqueue.commands import Decision, E, Rejection
from ferrisqueue.errors import (
    ConcurrentChange,
    DecodeError,
    NatsUnavailable,
    PayloadTooLarge,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.events import BaseEvent, Event, decode_event, encode_event
from ferrisqueue.fold import JobState, fold
from ferrisqueue.pubacks import AckInbox
from ferrisqueue.settings import Settings
from ferrisqueue.subjects import EVENT_STREAM, job_history_filter, subject_matches

_NO_MESSAGE = 10037  # "no message found"
_WRONG_LAST_SEQUENCE = 10071
_NO_RESPONDERS = "503"


def _stored_seq(subject: str, reply: Msg) -> int:
    """The sequence a JetStream publish ack names, or the translated refusal."""
    status = reply.headers.get("Status") if reply.headers else None
    try:
        answer = pydantic_core.from_json(reply.data)
    except ValueError as exc:
        raise PublishOutcomeUnknown(f"{subject}: unreadable ack (status {status})") from exc
    if error := answer.get("error"):
        code, why = error.get("err_code"), error.get("description")
        if code == _WRONG_LAST_SEQUENCE:
            raise ConcurrentChange(f"{subject}: {why}")
        raise PublishRejected(f"{subject}: {why} ({code})", code=code)
    seq: int = answer["seq"]
    return seq


def _sent_headers(headers: dict[str, str], stream: str) -> dict[str, str]:
    """``headers`` as published: the server refuses the message unless ``stream`` stores it."""
    return {**headers, "Nats-Expected-Stream": stream}


def _header_bytes(headers: dict[str, str]) -> int:
    """What ``headers`` add on the wire, as the server counts it: ``NATS/1.0``, one
    ``name: value`` line each, a blank line."""
    lines = sum(len(f"{name}: {value}\r\n".encode()) for name, value in headers.items())
    return len(b"NATS/1.0\r\n\r\n") + lines


def _headers(event: BaseEvent, after_seq: int | None) -> dict[str, str]:
    headers = {"Nats-Msg-Id": event.dedup_key()}
    if after_seq is not None:
        # Optimistic concurrency over all of the job's subjects (every event kind).
        headers["Nats-Expected-Last-Subject-Sequence"] = str(after_seq)
        headers["Nats-Expected-Last-Subject-Sequence-Subject"] = job_history_filter(event.job_id)
    return headers


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
    def decode(cls, seq: int, subject: str, data: bytes, stored_at: datetime) -> StoredEvent:
        try:
            return cls(
                seq,
                subject,
                stored_at,
                data,
                decode_event(subject, data, stored_at=stored_at),
                None,
            )
        except DecodeError as exc:
            return cls(seq, subject, stored_at, data, None, exc)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a message a consumer delivered sits in its stream, and how often it came."""

    seq: int
    deliveries: int
    stored_at: datetime

    @classmethod
    def of(cls, msg: Msg) -> Delivery:
        """Read from the message's ack subject, ``$JS.ACK.[<domain>.<account>.]<stream>.
        <consumer>.<delivered>.<stream seq>.<consumer seq>.<nanoseconds>.<pending>[...]``.

        ``msg.metadata`` reads the same but builds several objects per message: a tenth of
        the projector's receiving time."""
        tokens = (msg.reply or "").split(".")
        if tokens[:2] != ["$JS", "ACK"] or len(tokens) < 9 or len(tokens) == 10:
            meta = msg.metadata  # not a JetStream delivery: the library's error says so
            return cls(meta.sequence.stream, meta.num_delivered, meta.timestamp)
        at = 2 if len(tokens) > 9 else 0  # the newer form names the domain and account
        return cls(
            int(tokens[at + 5]),
            int(tokens[at + 4]),
            datetime.fromtimestamp(int(tokens[at + 7]) / 1e9, UTC),
        )

    def event(self, msg: Msg) -> StoredEvent:
        """The delivered message as a :class:`StoredEvent`."""
        return StoredEvent.decode(self.seq, msg.subject, msg.data, self.stored_at)


def fold_history(history: Iterable[StoredEvent]) -> JobState | None:
    """A job's state from its stored messages (undecodable ones change nothing)."""
    return fold(stored.event for stored in history if stored.event is not None)


COMMAND_TRIES = 5
"""How often :meth:`EventLog.command` reads, decides and appends before it gives up.

Every try that fails does so because another writer appended to the same job in between
(a worker's ``started`` / ``progress`` / outcome, a fired timer's ``released``, another
operator), so the job made progress and the next decision is made on newer facts; often it
is then a rejection (the job finished) and the command ends. A job's writers are few and
mostly take turns, so a job that changes five times inside five read-to-append windows
(a few milliseconds each) is one whose handler reports progress in a tight loop, or a
storm of duplicate commands; then the caller is told so (:class:`ConcurrentChange`: the
gateway answers 503 with ``Retry-After``, a worker leaves the message for redelivery, a
dead-letter action reports the job as skipped) rather than spinning. Five is the most any
command used before they shared this loop (cancel; start used 3, redrive and purge 2), so
no command gives up sooner than it did. No pause between tries: a conflict is resolved by
reading the job again, not by waiting for it.
"""

Decide = Callable[[JobState | None, Sequence[BaseEvent]], Decision[E]]
"""A command's decision on a job's folded state and decoded history (see
:mod:`ferrisqueue.commands`); called again on fresher facts after a conflict."""


@dataclass(frozen=True, slots=True)
class Appended:
    """An event a command appended, and where the log holds it."""

    event: BaseEvent
    seq: int
    duplicate: bool
    """The log already held an event with its dedup key (within the 2-minute window) and
    answered with that one's earlier sequence: nothing new was stored."""


@dataclass(frozen=True, slots=True)
class CommandResult(Generic[E]):
    """What :meth:`EventLog.command` did: the last decision and the facts it was made on."""

    state: JobState | None
    """The job's state the last decision was made on (before its events)."""
    history: list[StoredEvent]
    """The job's history that state was folded from."""
    decision: Decision[E]
    appended: tuple[Appended, ...]
    """Every event this command stored, over all its tries, in order: an earlier try may
    have stored some of its events before a conflict stopped it."""

    @property
    def rejection(self) -> Rejection | None:
        return self.decision if isinstance(self.decision, Rejection) else None

    @property
    def events(self) -> tuple[E, ...]:
        """The events of the last decision (all appended), or none if it was a rejection."""
        return () if isinstance(self.decision, Rejection) else self.decision


class EventLog:
    """Append events and read a job's history."""

    def __init__(
        self, nc: Client, *, publish_timeout: float = 5.0, max_event_bytes: int = 512 * 1024
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._acks = AckInbox(nc)
        self._publish_timeout = publish_timeout
        self._max_event_bytes = max_event_bytes

    @classmethod
    def for_settings(cls, nc: Client, settings: Settings) -> EventLog:
        return cls(
            nc, publish_timeout=settings.publish_timeout, max_event_bytes=settings.max_event_bytes
        )

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def max_payload(self) -> int:
        """The largest message (body and headers) the server accepts."""
        size: int = self._nc.max_payload
        return size

    def body_room(self, *, stream: str, headers: dict[str, str]) -> int:
        """The largest body :meth:`publish` can send to ``stream`` with ``headers``."""
        return self.max_payload - _header_bytes(_sent_headers(headers, stream))

    async def append(self, event: BaseEvent, *, after_seq: int | None = None) -> int:
        """Publish ``event`` and wait for JetStream to store it; returns its stream sequence.

        The ``Nats-Msg-Id`` header is the event's dedup key, so appending the same event
        again (after a timeout, say) stores it once and returns the original sequence.
        With ``after_seq``, the append is guarded: it is stored only if the job's newest
        event is still the one at ``after_seq``, else :class:`ConcurrentChange`.
        """
        body = encode_event(event)
        if len(body) > self._max_event_bytes:
            raise PayloadTooLarge(
                f"{event.kind.value} event of {len(body)} bytes exceeds the limit of "
                f"{self._max_event_bytes} bytes"
            )
        # Without Nats-Expected-Stream: no other stream can store fq.job.> (the server
        # refuses streams whose subjects overlap), and a header is kept with the event and
        # parsed again on every read of it (each event is read at least by the projector).
        return await self._publish(event.subject, body, _headers(event, after_seq), EVENT_STREAM)

    async def command(
        self, job_id: str, decide: Decide[E], *, history: list[StoredEvent] | None = None
    ) -> CommandResult[E]:
        """Carry out one command on a job: read its history, fold it, ``decide``, and
        append the decided events, each guarded by the job's newest sequence (the first by
        the last one read, each further one by its predecessor's), so the events land only
        on the state they were decided on. If another writer appended in between
        (:class:`ConcurrentChange`), read and decide again, at most :data:`COMMAND_TRIES`
        times; then :class:`ConcurrentChange` is raised. A :class:`Rejection` ends the
        command with nothing (more) appended.

        ``history`` is one the caller already holds, or presumes (a worker presumes a job
        whose ``submitted`` it was just delivered has nothing else yet): the first decision
        is made on it without a read. If it is out of date, the guard refuses the append
        and the command reads the real one, so a wrong guess costs a round trip, never a
        wrong event.

        Callers never retry a command themselves; what they do around it (an HTTP answer,
        an ack, removing a dead letter or a timer) follows from the returned result.
        """
        appended: list[Appended] = []
        for _ in range(COMMAND_TRIES):
            if history is None:
                history = await self.history(job_id)
            state = fold_history(history)
            decision = decide(state, [s.event for s in history if s.event is not None])
            if isinstance(decision, Rejection):
                return CommandResult(state, history, decision, tuple(appended))
            last = history[-1].seq if history else 0
            try:
                for event in decision:
                    seq = await self.append(event, after_seq=last)
                    # A duplicate answers with the original's (earlier) sequence; the
                    # job's newest event is still the one at ``last``.
                    appended.append(Appended(event, seq, duplicate=seq <= last))
                    last = max(last, seq)
            except ConcurrentChange:
                history = None  # someone else appended: look again
                continue
            return CommandResult(state, history, decision, tuple(appended))
        raise ConcurrentChange(f"job {job_id} kept changing; retry")

    async def publish(
        self, subject: str, data: bytes, *, stream: str, headers: dict[str, str]
    ) -> int:
        """Publish one message to ``stream`` and wait for it to be stored; returns its
        sequence. The server refuses it if another stream would store it. Library errors
        come back as FerrisQueue's (see :meth:`append`)."""
        return await self._publish(subject, data, _sent_headers(headers, stream), stream)

    async def _publish(
        self, subject: str, data: bytes, headers: dict[str, str], stream: str
    ) -> int:
        if not self._nc.is_connected:
            raise NatsUnavailable("not connected to NATS")
        size = len(data) + _header_bytes(headers)
        if size > self.max_payload:
            # nats-py checks the body alone; the server counts the headers too, answers a
            # larger message with "Maximum Payload Violation" and drops the connection, which
            # nats-py then closes for good. Refuse it here instead.
            raise PayloadTooLarge(
                f"{subject}: {size} bytes with headers, the server takes {self.max_payload}"
            )
        try:
            reply = await self._acks.request(
                subject,
                data,
                headers=headers,
                within=self._publish_timeout,
            )
        except TimeoutError as exc:
            raise PublishOutcomeUnknown(f"no ack for {subject} in time") from exc
        except nats.errors.MaxPayloadError as exc:
            raise PayloadTooLarge(f"{subject}: larger than the server accepts") from exc
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.StaleConnectionError,
        ) as exc:
            raise NatsUnavailable(f"cannot publish {subject}: {exc!r}") from exc
        if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise NatsUnavailable(await self._unanswered(subject, stream))
        return _stored_seq(subject, reply)

    async def _unanswered(self, subject: str, stream: str) -> str:
        """Why no stream answered a publish on ``subject``: a missing stream needs
        ``fq init``, a stream without a leader (an election, after a node was lost) needs
        only a retry. Asked only when it happens (one request)."""
        why = f"no stream answers on {subject}"
        try:
            info = await self._js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return f"{why}: stream {stream} does not exist (run `fq init`)"
        except (nats.errors.Error, TimeoutError):
            return f"{why}: JetStream has no leader for {stream} right now (an election?); retry"
        if info.cluster is not None and not info.cluster.leader:
            return f"{why}: stream {stream} is electing a leader (a node was lost?); retry"
        if any(subject_matches(subject, p) for p in info.config.subjects or []):
            return f"{why}: stream {stream} did not answer in time (a leader change?); retry"
        return f"{why}: stream {stream} does not store this subject"

    async def purge(self, subject: str, *, stream: str) -> None:
        """Remove every message on ``subject`` from ``stream`` (nothing there is no error)."""
        if not self._nc.is_connected:
            raise NatsUnavailable("not connected to NATS")
        try:
            await self._js.purge_stream(stream, subject=subject)
        except nats.js.errors.APIError as exc:
            raise PublishRejected(f"purge {subject}: {exc.description} ({exc.err_code})") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"cannot purge {subject}: {exc!r}") from exc

    async def read(
        self, stream: str, subject: str, *, from_seq: int | None = None
    ) -> RawStreamMsg | None:
        """The last message on ``subject`` in ``stream``, or with ``from_seq`` the first one
        at or after that sequence; ``None`` when there is none."""
        if not self._nc.is_connected:
            raise NatsUnavailable("not connected to NATS")
        try:
            if from_seq is None:
                return await self._js.get_last_msg(stream, subject)
            return await self._js.get_msg(stream, seq=from_seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NO_MESSAGE:
                return None
            raise NatsUnavailable(f"reading {subject}: {exc.description}") from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise NatsUnavailable(f"reading {subject}: {exc!r}") from exc

    async def newest(self, job_id: str) -> StoredEvent | None:
        """The newest stored message of one job (one request), or None if it has none."""
        raw = await self.read(EVENT_STREAM, job_history_filter(job_id))
        return None if raw is None else _stored(raw)

    async def last_seq(self, stream: str = EVENT_STREAM) -> int:
        """The sequence of the newest message in ``stream`` (0 when empty)."""
        if not self._nc.is_connected:
            raise NatsUnavailable("not connected to NATS")
        try:
            info = await self._js.stream_info(stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"cannot read the state of {stream}: {exc!r}") from exc
        seq: int = info.state.last_seq
        return seq

    async def history(self, job_id: str) -> list[StoredEvent]:
        """Every stored message of one job, in log order (read straight from the stream)."""
        found: list[StoredEvent] = []
        while raw := await self.read(
            EVENT_STREAM, job_history_filter(job_id), from_seq=found[-1].seq + 1 if found else 1
        ):
            found.append(_stored(raw))
        return found


def _stored(raw: RawStreamMsg) -> StoredEvent:
    assert raw.seq is not None and raw.subject is not None and raw.time is not None
    return StoredEvent.decode(raw.seq, raw.subject, raw.data or b"", raw.time)
