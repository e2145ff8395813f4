"""Pulling from a durable JetStream consumer, handing messages over the moment they arrive.

nats-py's ``fetch(batch=n)`` returns only when ``n`` messages arrived or its timeout ran out,
so on a quiet queue a job would wait up to the whole timeout before it starts. This puller
sends the same pull requests (``$JS.API.CONSUMER.MSG.NEXT``) itself and yields each *burst*:
the first message that arrives plus whatever else is already waiting in the inbox. A busy
consumer gets large bursts (few wake-ups), a quiet one gets every message at once.

One pull request is outstanding at a time. It ends when its batch is delivered, or with a
status message (408 when it expires, 409 when the server cuts it short), or at a client-side
deadline in case the connection dropped; then the next one is sent.

Each message is handed over as a :class:`NatsDelivery`, the log port's
:class:`~ferrisqueue.log.port.Delivery` over a nats-py message: its place in the stream read
from its ack subject, and ack / nak / term / in_progress with nats-py's errors translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from ferrisqueue.errors import NatsUnavailable
from ferrisqueue.log.port import (
    PULLING,
    Delivery,
    Pulling,
    RequestSize,
    Unused,
    ignore,
    unless_stopped,
)

_STATUS = "Status"
_HEARTBEAT = "100"
_NO_RESPONDERS = "503"
_NANOS = 1_000_000_000
_FIRST_PAUSE = 0.1
_LONGEST_PAUSE = 2.0
"""Seconds between pull requests that nobody answers, doubling from the first."""

log = logging.getLogger(__name__)

TransportClosed = RuntimeError
"""What nats-py raises when it writes to a socket the server has just closed and it has not
noticed yet: uvloop's "unable to perform operation on <TCPTransport closed=True ...>; the
handler is closed", a bare ``RuntimeError`` (seen in the gateway when the node it was
connected to was killed: a 500 instead of a 503). The server is away; what was being written
stays in nats-py's buffer, which it sends after reconnecting, so a publish's outcome is unknown."""


def _utc(nanos: int) -> datetime:
    """A storage time in nanoseconds, truncated to microseconds as nats-py reads a stored
    message's time (``get_msg``), so a delivery and a read of one message agree exactly.
    (``msg.metadata`` divides as floats and can be a microsecond off.)"""
    seconds, rest = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


@dataclass(slots=True, eq=False)
class NatsDelivery(Delivery):
    """A message a JetStream consumer delivered, settled through its ack subject."""

    msg: Msg

    @classmethod
    def of(cls, msg: Msg) -> NatsDelivery:
        """Read from the message's ack subject, ``$JS.ACK.[<domain>.<account>.]<stream>.
        <consumer>.<delivered>.<stream seq>.<consumer seq>.<nanoseconds>.<pending>[...]``.

        ``msg.metadata`` reads the same but builds several objects per message: a tenth of
        the projector's receiving time."""
        tokens = (msg.reply or "").split(".")
        if tokens[:2] != ["$JS", "ACK"] or len(tokens) < 9 or len(tokens) == 10:
            meta = msg.metadata  # not a JetStream delivery: the library's error says so
            seq, deliveries, stored_at = meta.sequence.stream, meta.num_delivered, meta.timestamp
        else:
            at = 2 if len(tokens) > 9 else 0  # the newer form names the domain and account
            seq, deliveries = int(tokens[at + 5]), int(tokens[at + 4])
            stored_at = _utc(int(tokens[at + 7]))
        return cls(seq, deliveries, msg.subject, msg.data, msg.headers, stored_at, msg)

    @property
    def backlog_after(self) -> int | None:
        tokens = (self.msg.reply or "").split(".")
        if tokens[:2] != ["$JS", "ACK"] or len(tokens) < 9 or len(tokens) == 10:
            return None
        pending = tokens[(2 if len(tokens) > 9 else 0) + 8]
        return int(pending) if pending.isdigit() else None

    async def ack(self) -> None:
        await self._settle(self.msg.ack())

    async def nak(self, delay: float | None = None) -> None:
        await self._settle(self.msg.nak(delay=delay))

    async def term(self, reason: str | None = None) -> None:
        if reason is None:
            await self._settle(self.msg.term())
        else:  # msg.term() cannot carry a reason; the protocol's "+TERM <reason>" can
            await self._settle(self.msg.respond(f"+TERM {reason}".encode()))

    async def in_progress(self) -> None:
        await self._settle(self.msg.in_progress())

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except (nats.errors.Error, TransportClosed) as exc:
            raise NatsUnavailable(
                f"cannot settle {self.subject} (seq {self.seq}): {exc!r}"
            ) from exc


class Puller:
    """Bursts of messages from one durable pull consumer."""

    def __init__(self, nc: Client, stream: str, consumer: str, pulling: Pulling = PULLING) -> None:
        self._nc = nc
        self._linger = pulling.linger
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._expires = pulling.expires
        self._no_wait = pulling.no_wait
        self._inbox = nc.new_inbox()
        self._arrived: asyncio.Queue[Msg] = asyncio.Queue()
        self._held: list[Delivery] = []
        """Delivered after ``stopping`` was set: never handed over, returned by :meth:`stop`."""
        self._sub: Subscription | None = None
        self._give_up_after = pulling.give_up_after
        self._answered = True
        self._unanswered_since: float | None = None
        self._pause = _FIRST_PAUSE

    async def start(self) -> None:
        async def arrived(msg: Msg) -> None:
            self._arrived.put_nowait(msg)

        self._sub = await self._nc.subscribe(self._inbox, cb=arrived)

    async def stop(self) -> list[Delivery]:
        """Unsubscribe; returns messages that arrived but were never handed over."""
        if self._sub is not None:
            await self._sub.unsubscribe()
        left, self._held = self._held, []
        while not self._arrived.empty():
            msg = self._arrived.get_nowait()
            if not _status(msg):
                left.append(NatsDelivery.of(msg))
        return left

    async def bursts(
        self, stopping: asyncio.Event, *, request_size: RequestSize, unused: Unused = ignore
    ) -> AsyncIterator[list[Delivery]]:
        """Yield bursts until ``stopping`` is set.

        ``request_size`` says how many messages to ask for next (it may wait, e.g. for free
        worker slots; setting ``stopping`` ends that wait); ``unused`` gets back the part of a
        request that was not delivered. Once ``stopping`` is set nothing more is yielded: a
        pull request still outstanding is let run out (a message delivered to an inbox
        nobody reads would be stuck until its AckWait), and what it delivers is held for
        :meth:`stop` to return.
        """
        while not stopping.is_set():
            wanted = await unless_stopped(request_size(), stopping)
            if wanted is None:
                return
            if stopping.is_set():
                unused(wanted)
                return
            delivered = 0
            try:
                await self._request(wanted)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._expires + 1.0
                while delivered < wanted:
                    burst, finished = await self._next_burst(wanted - delivered, deadline)
                    if burst:
                        delivered += len(burst)
                        if stopping.is_set():
                            self._held += burst  # arrived as we stop: for stop() to return
                        else:
                            yield burst
                    if finished:
                        break
            finally:
                unused(wanted - delivered)
            if not self._answered:
                await self._unanswered(stopping)
            else:
                self._unanswered_since = None

    async def _unanswered(self, stopping: asyncio.Event) -> None:
        """A pull request nobody answered (503 no responders: the consumer has no leader,
        as in an election, or is gone; or no answer at all: the connection dropped). Wait
        before the next one, longer each time, instead of spinning; warn once per streak,
        and give up after ``give_up_after`` seconds if the owner can recover (re-create the
        consumer)."""
        loop = asyncio.get_running_loop()
        if self._unanswered_since is None:
            self._unanswered_since = loop.time()
            self._pause = _FIRST_PAUSE
            log.warning("no answer to pull requests on %s; asking again", self._api)
        elif self._give_up_after is not None and (
            loop.time() - self._unanswered_since > self._give_up_after
        ):
            raise NatsUnavailable(
                f"no answer to pull requests on {self._api} for {self._give_up_after:g} s"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), self._pause)
        self._pause = min(self._pause * 2, _LONGEST_PAUSE)

    async def _request(self, batch: int) -> None:
        self._answered = False
        body: dict[str, object] = {"batch": batch, "expires": int(self._expires * _NANOS)}
        if self._no_wait:  # answered at once: what is there, then 404 if that is short
            body = {"batch": batch, "no_wait": True}
        await self._nc.publish(self._api, json.dumps(body).encode(), reply=self._inbox)

    async def _next_burst(self, most: int, deadline: float) -> tuple[list[Delivery], bool]:
        """Wait for the next message, then take what else arrives within the linger time
        (up to ``most``).
        Returns the messages and whether the pull request is over."""
        loop = asyncio.get_running_loop()
        burst: list[Delivery] = []
        while not burst:
            try:
                msg = await asyncio.wait_for(self._arrived.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return burst, True  # no answer at all: the connection may have dropped
            status = _status(msg)
            self._answered = self._answered or status != _NO_RESPONDERS
            if status == _HEARTBEAT:
                continue
            if status:
                return burst, True
            burst.append(NatsDelivery.of(msg))
        linger_until = loop.time() + self._linger
        while len(burst) < most:
            if not self._arrived.empty():
                msg = self._arrived.get_nowait()
            else:
                remaining = linger_until - loop.time()
                if remaining <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(self._arrived.get(), remaining)
                except TimeoutError:
                    break
            status = _status(msg)
            if status and status != _HEARTBEAT:
                return burst, True
            if not status:
                burst.append(NatsDelivery.of(msg))
        return burst, False


def _status(msg: Msg) -> str | None:
    return msg.headers.get(_STATUS) if msg.headers else None
