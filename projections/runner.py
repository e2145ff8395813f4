"""The projector process: read the event log in order and apply it to the read store.

Position lives in the read store (the ``projection_checkpoints`` row written with the data),
not in NATS. At start the durable consumer ``fq-projector`` is re-created to deliver from
checkpoint + 1, so a fresh store rebuilds from the first event, a restarted projector
resumes exactly where its last commit left off, and nothing waits for an AckWait to expire.

One projector per read store: two would each receive part of the log (see
docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.eventlog import StoredEvent
from ferrisqueue.natsconn import close_quietly, connect
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.subjects import EVENT_STREAM
from ferrisqueue.topology import (
    PROJECTOR_CONSUMER,
    delete_consumer,
    ensure_consumer,
    ensure_streams,
    load_consumer_definition,
)
from projections import jobs

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1.0


class Projector:
    """Runs the jobs projection until stopped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        nc = await connect(
            self._settings.effective_nats_url,
            name="fq-projector",
            connect_timeout=self._settings.nats_connect_timeout,
        )
        try:
            await ensure_streams(nc)
            with Session(engine) as session:
                position = queries.checkpoint(session, jobs.NAME)
            sub = await self._subscribe(nc, position)
            log.info("projector resuming after stream sequence %d", position)
            await self._consume(sub, engine)
        finally:
            await close_quietly(nc)
            engine.dispose()

    async def _subscribe(self, nc: Client, position: int) -> JetStreamContext.PullSubscription:
        config = dict(load_consumer_definition(EVENT_STREAM, PROJECTOR_CONSUMER))
        if position > 0:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=position + 1)
        # The start position cannot be changed on an existing consumer: re-create it.
        await delete_consumer(nc, EVENT_STREAM, PROJECTOR_CONSUMER)
        await ensure_consumer(nc, EVENT_STREAM, config)
        return await nc.jetstream().pull_subscribe_bind(
            durable=PROJECTOR_CONSUMER, stream=EVENT_STREAM
        )

    async def _consume(self, sub: JetStreamContext.PullSubscription, engine: Engine) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self._settings.projector_batch, timeout=FETCH_TIMEOUT)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except nats.errors.Error as exc:
                log.warning("fetch failed (%s); retrying", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), FETCH_TIMEOUT)
                continue
            batch = [
                StoredEvent.decode(
                    m.metadata.sequence.stream, m.subject, m.data, m.metadata.timestamp
                )
                for m in msgs
            ]
            await asyncio.to_thread(_apply, engine, batch)
            await msgs[-1].ack()  # the consumer acks all: one ack covers the batch


def _apply(engine: Engine, batch: Sequence[StoredEvent]) -> int:
    with Session(engine) as session:
        return jobs.apply_batch(session, batch)
