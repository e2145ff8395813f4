"""The NATS adapter of the log port: the event log on JetStream, through nats-py.

:class:`NatsLog` implements :class:`~ferrisqueue.log.eventlog.EventLog`'s primitives with
JetStream: publishes wait for their ack (through :class:`~ferrisqueue.log.pubacks.AckInbox`), reads
are direct gets, consumers are pulled by :class:`~ferrisqueue.log.puller.Puller`, and streams and
consumers are created through the JetStream API. It is one of the few modules that import
nats-py (with :mod:`ferrisqueue.log.natsconn`, :mod:`ferrisqueue.log.puller` and
:mod:`ferrisqueue.log.pubacks`); everything it raises is FerrisQueue's (:mod:`ferrisqueue.errors`),
so callers can tell "definitely not stored" (:class:`PublishRejected`, :class:`NatsUnavailable`)
from "maybe stored" (:class:`PublishOutcomeUnknown`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import nats.errors
import nats.js.errors
import pydantic_core
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from ferrisqueue.domain.subjects import subject_matches
from ferrisqueue.errors import (
    ConcurrentChange,
    ConfigurationError,
    NatsUnavailable,
    PayloadTooLarge,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natsconn import close_quietly, connect_as
from ferrisqueue.log.port import (
    PULLING,
    WRONG_LAST_SEQUENCE,
    Backlog,
    Consumer,
    Pulling,
    StoredMessage,
    Watcher,
    header_bytes,
)
from ferrisqueue.log.pubacks import AckInbox
from ferrisqueue.log.puller import Puller, TransportClosed
from ferrisqueue.settings import Settings

log = logging.getLogger(__name__)

_NO_MESSAGE = 10037  # "no message found"
_NO_RESPONDERS = "503"
_STREAM_IN_USE = 10058  # "stream name already in use with a different configuration"
_NO_CONSUMER = 10014
_NO_STREAM = 10059
_UNANSWERED = frozenset({None, 10008})  # no answer; "JetStream system temporarily unavailable"

API_TIMEOUT = 5.0
"""Seconds one JetStream API request waits for its answer."""
API_PATIENCE = 30.0
"""Seconds a topology request is asked again while JetStream does not answer."""
API_RETRY_PAUSE = 1.0


def _stored_seq(subject: str, reply: Msg) -> int:
    """The sequence a JetStream publish ack names, or the translated refusal."""
    status = reply.headers.get("Status") if reply.headers else None
    try:
        answer = pydantic_core.from_json(reply.data)
    except ValueError as exc:
        raise PublishOutcomeUnknown(f"{subject}: unreadable ack (status {status})") from exc
    if error := answer.get("error"):
        code, why = error.get("err_code"), error.get("description")
        if code == WRONG_LAST_SEQUENCE:
            raise ConcurrentChange(f"{subject}: {why}")
        raise PublishRejected(f"{subject}: {why} ({code})", code=code)
    seq: int = answer["seq"]
    return seq


class NatsLog(EventLog):
    """The event log (and every other stream) on a NATS connection."""

    def __init__(
        self,
        nc: Client,
        *,
        publish_timeout: float = 5.0,
        max_event_bytes: int = 512 * 1024,
        owned: bool = False,
        creates_topology: bool = True,
    ) -> None:
        """``owned``: :meth:`close` closes the connection too (it was opened for this log);
        ``creates_topology``: see :attr:`~ferrisqueue.log.port.LogPort.creates_topology`."""
        super().__init__(max_event_bytes=max_event_bytes)
        self.creates_topology = creates_topology
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._acks = AckInbox(nc)
        self._publish_timeout = publish_timeout
        self._owned = owned

    @classmethod
    def for_settings(cls, nc: Client, settings: Settings, *, owned: bool = False) -> NatsLog:
        return cls(
            nc,
            publish_timeout=settings.publish_timeout,
            max_event_bytes=settings.max_event_bytes,
            owned=owned,
            # A role (a NATS user) may not change streams and consumers: only `fq init` may.
            creates_topology=not settings.nats_authenticated,
        )

    @classmethod
    async def connect(cls, settings: Settings, *, name: str) -> NatsLog:
        """Connect to ``FQ_NATS_URL`` (see :func:`ferrisqueue.log.natsconn.connect`: reconnect
        for ever, a server version check) and return the log owning that connection."""
        nc = await connect_as(settings, name=name)
        return cls.for_settings(nc, settings, owned=True)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def max_payload(self) -> int:
        size: int = self._nc.max_payload
        return size

    async def close(self) -> None:
        if self._owned:
            await close_quietly(self._nc)

    # --- publishing -----------------------------------------------------------------------

    async def store(
        self, subject: str, data: bytes, *, headers: Mapping[str, str], stream: str
    ) -> int:
        self._check_connected()
        size = len(data) + header_bytes(headers)
        if size > self.max_payload:
            # nats-py checks the body alone; the server counts the headers too, answers a
            # larger message with "Maximum Payload Violation" and drops the connection, which
            # nats-py then closes for good. Refuse it here instead.
            raise PayloadTooLarge(
                f"{subject}: {size} bytes with headers, the server takes {self.max_payload}"
            )
        try:
            reply = await self._acks.request(
                subject, data, headers=dict(headers), within=self._publish_timeout
            )
        except TimeoutError as exc:
            raise PublishOutcomeUnknown(f"no ack for {subject} in time") from exc
        except TransportClosed as exc:
            raise PublishOutcomeUnknown(f"cannot publish {subject}: {exc!r}") from exc
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

    # --- reading and purging --------------------------------------------------------------

    async def read(
        self, stream: str, subject: str, *, from_seq: int | None = None
    ) -> StoredMessage | None:
        self._check_connected()
        try:
            if from_seq is None:
                raw = await self._js.get_last_msg(stream, subject)
            else:
                raw = await self._js.get_msg(stream, seq=from_seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            if exc.err_code == _NO_MESSAGE:
                return None
            raise NatsUnavailable(f"reading {subject}: {exc.description}") from exc
        except (TimeoutError, nats.errors.Error, TransportClosed) as exc:
            raise NatsUnavailable(f"reading {subject}: {exc!r}") from exc
        return _message(raw)

    async def purge(self, subject: str, *, stream: str, before_seq: int | None = None) -> None:
        self._check_connected()
        try:
            await self._js.purge_stream(stream, subject=subject, seq=before_seq)
        except nats.js.errors.APIError as exc:
            raise PublishRejected(f"purge {subject}: {exc.description} ({exc.err_code})") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"cannot purge {subject}: {exc!r}") from exc

    async def last_seq(self, stream: str) -> int:
        self._check_connected()
        try:
            info = await self._js.stream_info(stream)
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"cannot read the state of {stream}: {exc!r}") from exc
        seq: int = info.state.last_seq
        return seq

    async def subjects(self, stream: str, subject: str) -> set[str]:
        self._check_connected()
        try:
            info = await self._js.stream_info(stream, subjects_filter=subject)
        except nats.js.errors.APIError as exc:
            raise NatsUnavailable(
                f"listing {subject} in {stream}: {exc.description} ({exc.err_code})"
            ) from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"listing {subject} in {stream}: {exc!r}") from exc
        return set(info.state.subjects or {})

    def _check_connected(self) -> None:
        # Fail at once rather than wait out a request timeout while nats-py reconnects.
        if not self._nc.is_connected:
            raise NatsUnavailable("not connected to NATS")

    # --- streams and consumers ------------------------------------------------------------

    async def ensure_stream(self, config: Mapping[str, Any]) -> None:
        name = config["name"]
        reply = await self._api(
            f"$JS.API.STREAM.CREATE.{name}", dict(config), allow=(_STREAM_IN_USE,)
        )
        if reply.get("error"):
            update = dict(config)
            if "num_replicas" not in update:  # keep the replica count the stream has
                info = await self._api(f"$JS.API.STREAM.INFO.{name}", None)
                update["num_replicas"] = info["config"].get("num_replicas", 1)
            await self._api(f"$JS.API.STREAM.UPDATE.{name}", update)

    async def ensure_consumer(self, stream: str, config: Mapping[str, Any]) -> None:
        body = {"stream_name": stream, "config": dict(config)}
        await self._api(f"$JS.API.CONSUMER.CREATE.{stream}.{config['durable_name']}", body)

    async def has_stream(self, name: str) -> bool:
        reply = await self._api(f"$JS.API.STREAM.INFO.{name}", None, allow=(_NO_STREAM,))
        return reply.get("error") is None

    async def consumer_definition(self, stream: str, name: str) -> dict[str, Any] | None:
        reply = await self._api(
            f"$JS.API.CONSUMER.INFO.{stream}.{name}", None, allow=(_NO_CONSUMER, _NO_STREAM)
        )
        if reply.get("error") is not None:
            return None
        config: dict[str, Any] = reply["config"]
        return config

    async def delete_consumer(self, stream: str, name: str) -> None:
        await self._api(f"$JS.API.CONSUMER.DELETE.{stream}.{name}", None, allow=(_NO_CONSUMER,))

    def consumer(self, stream: str, name: str, pulling: Pulling = PULLING) -> Consumer:
        return Puller(self._nc, stream, name, pulling)

    async def backlogs(self, stream: str) -> dict[str, Backlog]:
        self._check_connected()
        try:
            infos = await self._js.consumers_info(stream)
        except nats.js.errors.APIError as exc:
            raise NatsUnavailable(f"listing the consumers of {stream}: {exc.description}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsUnavailable(f"listing the consumers of {stream}: {exc!r}") from exc
        return {
            info.name: Backlog(info.num_pending or 0, info.num_ack_pending or 0) for info in infos
        }

    async def watch(self, subject: str, watcher: Watcher) -> None:
        async def arrived(msg: Msg) -> None:
            await watcher(msg.subject, msg.data)

        try:
            await self._nc.subscribe(subject, cb=arrived)
        except nats.errors.Error as exc:
            raise NatsUnavailable(f"cannot watch {subject}: {exc!r}") from exc

    async def _api(
        self, subject: str, body: dict[str, Any] | None, *, allow: tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """One JetStream API request. Every request made here is idempotent (create or
        update to a definition, delete what may be gone), so one that gets no answer — a
        cluster electing its meta leader, a node lost under load — is sent again for up to
        :data:`API_PATIENCE` seconds before :class:`NatsUnavailable` is raised; a service
        starting beside a busy cluster waits for it instead of dying."""
        payload = json.dumps(body).encode() if body is not None else b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + API_PATIENCE
        while True:
            try:
                msg = await self._nc.request(subject, payload, timeout=API_TIMEOUT)
                reply: dict[str, Any] = json.loads(msg.data)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                reply = {"error": {"err_code": None, "description": f"no answer ({exc!r})"}}
            error = reply.get("error")
            if error is None or error.get("err_code") in allow:
                return reply
            why = f"{subject}: {error.get('description')} ({error.get('err_code')})"
            if error.get("err_code") not in _UNANSWERED:
                raise ConfigurationError(why)
            if loop.time() + API_TIMEOUT > deadline:
                raise NatsUnavailable(f"JetStream did not answer in {API_PATIENCE:g} s: {why}")
            log.warning("%s; asking again", why)
            await asyncio.sleep(API_RETRY_PAUSE)  # the cluster's own recovery, not a test's wait


def _message(raw: RawStreamMsg) -> StoredMessage:
    assert raw.seq is not None and raw.subject is not None and raw.time is not None
    return StoredMessage(
        subject=raw.subject,
        seq=raw.seq,
        stored_at=raw.time,
        headers=dict(raw.headers or {}),
        data=raw.data or b"",
    )
