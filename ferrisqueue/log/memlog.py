"""An in-memory log with JetStream's behaviour, for tests that run in milliseconds.

:class:`MemoryLog` implements the log port (:mod:`ferrisqueue.log.port`) the way
:class:`~ferrisqueue.log.natslog.NatsLog` does on a nats-server, as far as FerrisQueue relies on
it, so the worker's executor, the scheduler's loops and the projector run on it unchanged
(like dramatiq's ``StubBroker``, it lives in the package: a plugin's author can run a real
:class:`~worker.executor.JobExecutor` over it too). What it honours:

* **streams** from the same JSON definitions (:func:`ferrisqueue.log.topology.ensure_streams`):
  subjects with ``*`` / ``>``, one sequence per stream, ``max_msgs_per_subject``,
  ``max_msg_size``, and ``sources`` with ``subject_transforms`` (``{{wildcard(n)}}``), so a
  fired timer in ``FQ_SCHEDULES`` becomes the job's ``released`` in ``FQ_EVENTS``;
* the publish headers: ``Nats-Expected-Stream``, ``Nats-Expected-Last-Subject-Sequence``
  (optionally over ``...-Subject``; :class:`~ferrisqueue.errors.ConcurrentChange`, checked
  before deduplication as the server does) and ``Nats-Msg-Id`` within the stream's
  ``duplicate_window``;
* **message schedules**: an ``@at`` schedule fires (its body stored on its
  ``Nats-Schedule-Target``, the schedule removed) once the clock passes its time;
* **durable pull consumers** from their definitions: ``filter_subject(s)``, deliver policy
  ``all`` / ``by_start_sequence`` / ``new``, ack policy ``explicit`` / ``all`` / ``none``,
  ``ack_wait`` and ``backoff`` (redelivery after it), ``max_deliver`` (then a
  MAX_DELIVERIES advisory, stored if a stream captures its subject, as ``FQ_ADVISORIES``
  does), ``max_ack_pending``, ``nak`` with a delay, ``term``, ``in_progress``.

Time is a clock the test moves (:meth:`MemoryLog.advance`): nothing here sleeps, so a
redelivery "after AckWait" happens the moment a test advances past it. Faults are
deterministic: :meth:`MemoryLog.connect` gives each simulated process its own connection and
:meth:`MemoryLog.kill` cuts one for good (a ``kill -9``: what it held unacked comes back after
AckWait); :meth:`MemoryLog.lose` makes a delivery vanish in transit (a consumer's leader
moving, issue 13), :meth:`MemoryLog.withhold` every delivery of a message (a consumer stuck
short of it). Tests wait for a state with :meth:`MemoryLog.wait_until`, which re-checks on
every change instead of polling.

Not modelled: clustering, stream limits other than those above, cron schedules (``@every``,
cron expressions: stored, never fired), per-message TTLs, pull request expiry.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ferrisqueue.domain.subjects import subject_matches
from ferrisqueue.errors import ConcurrentChange, NatsUnavailable, PayloadTooLarge, PublishRejected
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import (
    EXPECTED_LAST_SUBJECT_SEQ,
    EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
    EXPECTED_STREAM,
    MSG_ID,
    PULLING,
    WRONG_STREAM,
    Backlog,
    Consumer,
    Delivery,
    Pulling,
    RequestSize,
    StoredMessage,
    Unused,
    Watcher,
    header_bytes,
    ignore,
    unless_stopped,
)

MAX_PAYLOAD = 1024 * 1024
"""As the embedded server's ``max_payload: 1MB``."""
ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
_NANOS = 1_000_000_000
_WILDCARD = re.compile(r"\{\{\s*wildcard\((\d+)\)\s*\}\}")


@dataclass(slots=True)
class _Pending:
    deliveries: int
    due: datetime
    """When it is delivered again unless acked (AckWait, a nak's delay)."""


@dataclass(slots=True)
class _Consumer:
    stream: str
    config: dict[str, Any]
    cursor: int
    """The stream sequence up to which messages were delivered (or skipped) once."""
    pending: dict[int, _Pending] = field(default_factory=dict)

    @property
    def filters(self) -> list[str]:
        one = self.config.get("filter_subject")
        return list(self.config.get("filter_subjects") or ([one] if one else [">"]))

    def wants(self, subject: str) -> bool:
        return any(subject_matches(subject, f) for f in self.filters)

    def wait(self, deliveries: int) -> timedelta:
        """How long the ``deliveries``-th delivery stays leased (BackOff, else AckWait)."""
        backoff = self.config.get("backoff") or []
        nanos = backoff[min(deliveries, len(backoff)) - 1] if backoff else None
        return timedelta(seconds=(nanos or self.config.get("ack_wait", 30 * _NANOS)) / _NANOS)


@dataclass(slots=True)
class _Stream:
    config: dict[str, Any]
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    last_seq: int = 0
    ids: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    consumers: dict[str, _Consumer] = field(default_factory=dict)
    lost: dict[str, set[int]] = field(default_factory=dict)
    """By consumer name (kept when it is re-created): deliveries that will vanish."""
    withheld: dict[str, set[int]] = field(default_factory=dict)
    """By consumer name (kept when it is re-created): deliveries that always vanish."""

    def stores(self, subject: str) -> bool:
        return any(subject_matches(subject, p) for p in self.config.get("subjects", []))

    def matching(self, subject: str) -> list[StoredMessage]:
        return [m for m in self.messages.values() if subject_matches(m.subject, subject)]


class _State:
    """What every connection of one :class:`MemoryLog` shares: the server."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.streams: dict[str, _Stream] = {}
        self.watchers: list[tuple[MemoryLog, str, Watcher]] = []
        self.tasks: set[asyncio.Future[None]] = set()
        """Watchers called and not finished (kept referenced until they are)."""
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Wake whatever waits for the state to change (consumers, :meth:`wait_until`)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def next_change(self) -> Awaitable[bool]:
        """Wait for the next change after *this call* (not after the wait first runs: a
        change in between would be missed)."""
        return self._changed.wait()

    def stream(self, name: str) -> _Stream:
        if (stream := self.streams.get(name)) is None:
            raise PublishRejected(f"stream {name} not found", code=10059)
        return stream

    def store(self, subject: str, data: bytes, headers: Mapping[str, str]) -> int:
        """Store as the server does on a publish (the checks in order), then source it."""
        stream = next((s for s in self.streams.values() if s.stores(subject)), None)
        if stream is None:
            raise NatsUnavailable(f"no stream answers on {subject}: no stream stores it")
        name = stream.config["name"]
        if (expected := headers.get(EXPECTED_STREAM)) is not None and expected != name:
            raise PublishRejected(
                f"{subject}: expected stream does not match ({WRONG_STREAM})", code=WRONG_STREAM
            )
        if len(data) > stream.config.get("max_msg_size", -1) >= 0:
            raise PublishRejected(f"{subject}: message size exceeds maximum allowed", code=10054)
        if (guard := headers.get(EXPECTED_LAST_SUBJECT_SEQ)) is not None:
            over = headers.get(EXPECTED_LAST_SUBJECT_SEQ_SUBJECT, subject)
            last = max((m.seq for m in stream.matching(over)), default=0)
            if last != int(guard):
                raise ConcurrentChange(f"{subject}: wrong last sequence: {last}")
        window = timedelta(seconds=stream.config.get("duplicate_window", 120 * _NANOS) / _NANOS)
        stream.ids = {k: v for k, v in stream.ids.items() if self.now - v[1] < window}
        if (msg_id := headers.get(MSG_ID)) is not None and msg_id in stream.ids:
            return stream.ids[msg_id][0]
        seq = self._put(stream, subject, data, dict(headers))
        if msg_id is not None:
            stream.ids[msg_id] = (seq, self.now)
        return seq

    def _put(self, stream: _Stream, subject: str, data: bytes, headers: dict[str, str]) -> int:
        stream.last_seq += 1
        seq = stream.last_seq
        stream.messages[seq] = StoredMessage(subject, seq, self.now, headers, data)
        if (most := stream.config.get("max_msgs_per_subject", -1)) > 0:
            on_subject = [m.seq for m in stream.messages.values() if m.subject == subject]
            for old in on_subject[:-most]:
                del stream.messages[old]
        self._source(stream.config["name"], subject, data, headers)
        for connection, pattern, watcher in self.watchers:
            if connection.alive and subject_matches(subject, pattern):
                task = asyncio.ensure_future(watcher(subject, data))
                self.tasks.add(task)
                task.add_done_callback(self._watched)
        self.changed()
        return seq

    def _watched(self, task: asyncio.Future[None]) -> None:
        self.tasks.discard(task)
        self.changed()  # what a watcher did is something a test may wait for

    def _source(self, origin: str, subject: str, data: bytes, headers: dict[str, str]) -> None:
        for stream in self.streams.values():
            for source in stream.config.get("sources") or []:
                if source.get("name") != origin:
                    continue
                for transform in source.get("subject_transforms") or [{"src": ">", "dest": ""}]:
                    if subject_matches(subject, transform["src"]):
                        dest = _transformed(subject, transform["src"], transform["dest"])
                        self._put(stream, dest, data, headers)

    def fire_schedules(self) -> None:
        """Fire every ``@at`` message schedule whose time has come (as the server's tick)."""
        for stream in list(self.streams.values()):
            for message in list(stream.messages.values()):
                schedule = message.headers.get("Nats-Schedule", "")
                if not schedule.startswith("@at "):
                    continue
                at = datetime.fromisoformat(schedule.removeprefix("@at ").replace("Z", "+00:00"))
                if at <= self.now and message.seq in stream.messages:
                    del stream.messages[message.seq]
                    target = message.headers["Nats-Schedule-Target"]
                    # The server fires the schedule's own headers too (a trace context),
                    # all but its Nats-* ones.
                    kept = {k: v for k, v in message.headers.items() if not k.startswith("Nats-")}
                    self._put(stream, target, message.data, kept)

    def pull(self, stream_name: str, name: str, most: int) -> list[tuple[StoredMessage, int]]:
        """Up to ``most`` messages to hand over, with their delivery counts: due
        redeliveries first, then new ones, as the server serves a pull request."""
        stream = self.stream(stream_name)
        consumer = stream.consumers.get(name)
        if consumer is None:
            raise NatsUnavailable(f"consumer {name} on {stream_name} does not exist")
        self.expire(stream, name, consumer)
        out: list[tuple[StoredMessage, int]] = []
        acked = consumer.config.get("ack_policy", "explicit") != "none"
        for seq, pending in sorted(consumer.pending.items()):
            if len(out) >= most:
                break
            if pending.due <= self.now and seq in stream.messages:
                pending.deliveries += 1
                pending.due = self.now + consumer.wait(pending.deliveries)
                out.append((stream.messages[seq], pending.deliveries))
        limit = consumer.config.get("max_ack_pending", -1)
        for seq in range(consumer.cursor + 1, stream.last_seq + 1):
            if len(out) >= most or (0 < limit <= len(consumer.pending)):
                break
            consumer.cursor = seq
            message = stream.messages.get(seq)
            if message is None or not consumer.wants(message.subject):
                continue
            if acked:
                consumer.pending[seq] = _Pending(1, self.now + consumer.wait(1))
            out.append((message, 1))
        lost = stream.lost.get(name, set())
        withheld = stream.withheld.get(name, set())
        handed = [(m, n) for m, n in out if m.seq not in lost and m.seq not in withheld]
        lost -= {m.seq for m, _ in out}
        return handed

    def expire(self, stream: _Stream, name: str, consumer: _Consumer) -> None:
        """Give up on what was delivered ``max_deliver`` times and is due again: drop it
        and publish the MAX_DELIVERIES advisory (stored if a stream captures it)."""
        most = consumer.config.get("max_deliver", -1)
        if most <= 0:
            return
        for seq, pending in sorted(consumer.pending.items()):
            if pending.due <= self.now and pending.deliveries >= most:
                del consumer.pending[seq]
                subject = f"{ADVISORY_PREFIX}.{consumer.stream}.{name}"
                body = {
                    "type": "io.nats.jetstream.advisory.v1.max_deliver",
                    "stream": consumer.stream,
                    "consumer": name,
                    "stream_seq": seq,
                    "deliveries": pending.deliveries,
                }
                if any(s.stores(subject) for s in self.streams.values()):
                    self.store(subject, json.dumps(body).encode(), {})

    def settle(self, stream: str, name: str, seq: int, how: str, delay: float | None) -> None:
        consumer = self.stream(stream).consumers.get(name)
        if consumer is None:
            return  # the consumer was deleted meanwhile: as the server, ignore it
        if how == "ack" and consumer.config.get("ack_policy") == "all":
            for earlier in [s for s in consumer.pending if s <= seq]:
                del consumer.pending[earlier]
            self.changed()
            return
        if (pending := consumer.pending.get(seq)) is None:
            return  # settled already: as the server, ignore it
        if how in ("ack", "term"):
            del consumer.pending[seq]
        elif how == "nak":
            pending.due = self.now + timedelta(seconds=delay or 0)
        else:  # in_progress: the lease starts again
            pending.due = self.now + consumer.wait(pending.deliveries)
        self.changed()


def _transformed(subject: str, src: str, dest: str) -> str:
    """``subject`` (matching ``src``) as a stream source's transform renames it:
    ``{{wildcard(n)}}`` in ``dest`` is the token of the ``n``-th ``*`` of ``src``."""
    if not dest:
        return subject
    pattern = src.split(".")
    wild = [token for token, p in zip(subject.split("."), pattern, strict=False) if p == "*"]
    return _WILDCARD.sub(lambda m: wild[int(m.group(1)) - 1], dest)


class MemoryLog(EventLog):
    """One connection to an in-memory log; :meth:`connect` opens another to the same one."""

    def __init__(
        self,
        *,
        now: datetime | None = None,
        max_event_bytes: int = 512 * 1024,
        _state: _State | None = None,
    ) -> None:
        """``now``: where the log's clock starts (default: the current time, so storage
        times sit next to the events' own times)."""
        super().__init__(max_event_bytes=max_event_bytes)
        self._state = _state or _State(now or datetime.now(UTC))
        self.alive = True
        """False once :meth:`kill` cut this connection."""
        self._doomed: tuple[str, str] | None = None

    def connect(self) -> MemoryLog:
        """Another connection to the same log (another process)."""
        return MemoryLog(max_event_bytes=self._max_event_bytes, _state=self._state)

    # --- what tests use -------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The log's clock: storage times, duplicate windows, AckWait, nak delays."""
        return self._state.now

    def advance(self, seconds: float) -> None:
        """Move the clock: fire the ``@at`` schedules that came due and make what waited
        for an AckWait or a nak's delay deliverable again."""
        self._state.now += timedelta(seconds=seconds)
        self._state.fire_schedules()
        for stream in self._state.streams.values():
            for name, consumer in stream.consumers.items():
                self._state.expire(stream, name, consumer)
        self._state.changed()

    def kill(self) -> None:
        """Cut this connection for good (``kill -9`` of its process): every later call on
        it, and on the deliveries it received, raises :class:`NatsUnavailable`; its
        consumers hand nothing over. What it held unacked comes back after AckWait."""
        self.alive = False
        self._state.changed()

    def kill_before(self, operation: str, subject: str = ">") -> None:
        """Kill this connection just before its next ``operation`` (``store``, ``ack``,
        ``nak``, ``term`` or ``in_progress``) on a message whose subject matches
        ``subject``: that call fails as a dying process's would, and nothing after it
        happens. Puts a crash exactly into a window (after the outcome, before the ack)."""
        self._doomed = (operation, subject)

    def lose(self, stream: str, consumer: str, *seqs: int) -> None:
        """The next delivery of each of ``seqs`` vanishes in transit: counted delivered
        (an AckAll ack past it acknowledges it) but never handed over."""
        self._state.stream(stream).lost.setdefault(consumer, set()).update(seqs)

    def withhold(self, stream: str, consumer: str, *seqs: int) -> None:
        """Every delivery of each of ``seqs`` vanishes, on every consumer of that name: one
        that never hands them over however often it is re-created."""
        self._state.stream(stream).withheld.setdefault(consumer, set()).update(seqs)

    def messages(self, stream: str, subject: str = ">") -> list[StoredMessage]:
        """What ``stream`` holds on ``subject``, in order."""
        return self._state.stream(stream).matching(subject)

    def pending(self, stream: str, consumer: str) -> dict[int, int]:
        """The consumer's deliveries not yet acked: stream sequence -> deliveries so far."""
        found = self._state.stream(stream).consumers.get(consumer)
        return {} if found is None else {s: p.deliveries for s, p in found.pending.items()}

    async def wait_until(self, ready: Callable[[], bool], *, timeout: float) -> None:  # noqa: ASYNC109
        """Return once ``ready()`` holds, checked again after every change of the log;
        :class:`TimeoutError` after ``timeout`` seconds (of the event loop, not the log)."""
        async with asyncio.timeout(timeout):
            while not ready():
                await self._state.next_change()

    # --- the port -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.alive

    @property
    def max_payload(self) -> int:
        return MAX_PAYLOAD

    def _check(self, operation: str = "", subject: str = "") -> None:
        doomed = self._doomed
        if doomed and operation == doomed[0] and subject_matches(subject, doomed[1]):
            self.kill()
        if not self.alive:
            raise NatsUnavailable("not connected (the in-memory connection was killed)")

    async def store(
        self, subject: str, data: bytes, *, headers: Mapping[str, str], stream: str
    ) -> int:
        self._check("store", subject)
        size = len(data) + header_bytes(headers)
        if size > self.max_payload:
            raise PayloadTooLarge(
                f"{subject}: {size} bytes with headers, the log takes {self.max_payload}"
            )
        return self._state.store(subject, data, headers)

    async def read(
        self, stream: str, subject: str, *, from_seq: int | None = None
    ) -> StoredMessage | None:
        self._check()
        if stream not in self._state.streams:
            return None
        found = self.messages(stream, subject)
        if from_seq is None:
            return found[-1] if found else None
        return next((m for m in found if m.seq >= from_seq), None)

    async def purge(self, subject: str, *, stream: str, before_seq: int | None = None) -> None:
        self._check()
        held = self._state.stream(stream)
        for message in held.matching(subject):
            if before_seq is None or message.seq < before_seq:
                del held.messages[message.seq]
        self._state.changed()

    async def last_seq(self, stream: str) -> int:
        self._check()
        return self._state.stream(stream).last_seq

    async def subjects(self, stream: str, subject: str) -> set[str]:
        self._check()
        return {m.subject for m in self.messages(stream, subject)}

    async def ensure_stream(self, config: Mapping[str, Any]) -> None:
        self._check()
        existing = self._state.streams.get(config["name"])
        if existing is None:
            self._state.streams[config["name"]] = _Stream(dict(config))
        else:  # without num_replicas, the stream keeps the replica count it has
            existing.config = {**existing.config, **config}

    async def ensure_consumer(self, stream: str, config: Mapping[str, Any]) -> None:
        self._check()
        held = self._state.stream(stream)
        name = config["durable_name"]
        if (existing := held.consumers.get(name)) is not None:
            existing.config = dict(config)  # updated in place: its position and leases stay
            return
        policy = config.get("deliver_policy", "all")
        start = {"by_start_sequence": config.get("opt_start_seq", 1) - 1, "new": held.last_seq}
        held.consumers[name] = _Consumer(stream, dict(config), start.get(policy, 0))

    async def has_stream(self, name: str) -> bool:
        self._check()
        return name in self._state.streams

    async def consumer_definition(self, stream: str, name: str) -> dict[str, Any] | None:
        self._check()
        held = self._state.streams.get(stream)
        found = held.consumers.get(name) if held is not None else None
        return dict(found.config) if found is not None else None

    async def delete_consumer(self, stream: str, name: str) -> None:
        self._check()
        self._state.stream(stream).consumers.pop(name, None)

    def consumer(self, stream: str, name: str, pulling: Pulling = PULLING) -> Consumer:
        # Every pull is answered here, so there is nothing to give up on; a pull request
        # expires after ``pulling.expires`` (event-loop) seconds, as JetStream's do.
        return _Puller(self, stream, name, pulling.expires, no_wait=pulling.no_wait)

    async def backlogs(self, stream: str) -> dict[str, Backlog]:
        self._check()
        held = self._state.stream(stream)
        return {
            name: Backlog(
                sum(
                    1
                    for seq in range(consumer.cursor + 1, held.last_seq + 1)
                    if (m := held.messages.get(seq)) is not None and consumer.wants(m.subject)
                ),
                len(consumer.pending),
            )
            for name, consumer in held.consumers.items()
        }

    async def watch(self, subject: str, watcher: Watcher) -> None:
        self._check()
        self._state.watchers.append((self, subject, watcher))

    async def close(self) -> None:
        """Nothing to flush; the log outlives its connections (a restarted service
        connects again and finds it as it was)."""


@dataclass(slots=True, eq=False)
class _MemoryDelivery(Delivery):
    connection: MemoryLog
    stream: str
    consumer: str

    async def ack(self) -> None:
        self._settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        self._settle("nak", delay)

    async def term(self, reason: str | None = None) -> None:
        self._settle("term")

    async def in_progress(self) -> None:
        self._settle("in_progress")

    def _settle(self, how: str, delay: float | None = None) -> None:
        self.connection._check(how, self.subject)
        self.connection._state.settle(self.stream, self.consumer, self.seq, how, delay)


async def _changed(state: _State, within: float) -> bool:
    """Whether the log changed within ``within`` seconds (a pull request's expiry)."""
    try:
        await asyncio.wait_for(state.next_change(), within)
    except TimeoutError:
        return False
    return True


class _Puller:
    """Bursts from a consumer of the in-memory log: everything deliverable (up to the
    request), as soon as there is something; waits for the log to change otherwise."""

    def __init__(
        self, connection: MemoryLog, stream: str, name: str, expires: float, *, no_wait: bool
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._name = name
        self._expires = expires
        self._no_wait = no_wait

    async def start(self) -> None:
        self._connection._check()

    async def bursts(
        self, stopping: asyncio.Event, *, request_size: RequestSize, unused: Unused = ignore
    ) -> AsyncIterator[list[Delivery]]:
        state = self._connection._state
        while not stopping.is_set() and self._connection.alive:
            wanted = await unless_stopped(request_size(), stopping)
            if wanted is None:
                return
            delivered = 0
            try:
                while not stopping.is_set() and self._connection.alive:
                    pulled = state.pull(self._stream, self._name, wanted)
                    if pulled:
                        delivered = len(pulled)
                        yield [self._delivery(m, n) for m, n in pulled]
                        break
                    if self._no_wait or not await unless_stopped(
                        _changed(state, self._expires), stopping
                    ):
                        break  # nothing now, or expired (or stopping): the next request asks again
            finally:
                unused(wanted - delivered)

    def _delivery(self, message: StoredMessage, deliveries: int) -> Delivery:
        return _MemoryDelivery(
            message.seq,
            deliveries,
            message.subject,
            message.data,
            message.headers,
            message.stored_at,
            self._connection,
            self._stream,
            self._name,
        )

    async def stop(self) -> list[Delivery]:
        return []  # nothing is pulled ahead of being handed over
