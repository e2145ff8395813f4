"""The projector process: read the event log in order and apply it to the read store.

Position lives in the read store (the ``projection_checkpoints`` row written with the data),
not in NATS. At start the durable consumer ``fq-projector`` is re-created to deliver from
checkpoint + 1, so a fresh store rebuilds from the first event, a restarted projector
resumes exactly where its last commit left off, and nothing waits for an AckWait to expire.

One projector per read store, and one durable consumer (``FQ_PROJECTOR_CONSUMER``) per
projector: two projectors on one consumer would each receive part of the log (see
docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.eventlog import StoredEvent
from ferrisqueue.natsconn import close_quietly, connect
from ferrisqueue.puller import Puller
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
            puller = await self._puller(nc, position)
            log.info("projector resuming after stream sequence %d", position)
            await self._consume(puller, engine)
        finally:
            await close_quietly(nc)
            engine.dispose()

    async def _puller(self, nc: Client, position: int) -> Puller:
        name = self._settings.projector_consumer
        config = {
            **load_consumer_definition(EVENT_STREAM, PROJECTOR_CONSUMER),
            "durable_name": name,
        }
        if position > 0:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=position + 1)
        # The start position cannot be changed on an existing consumer: re-create it.
        await delete_consumer(nc, EVENT_STREAM, name)
        await ensure_consumer(nc, EVENT_STREAM, config)
        puller = Puller(nc, EVENT_STREAM, name, expires=FETCH_TIMEOUT)
        await puller.start()
        return puller

    async def _consume(self, puller: Puller, engine: Engine) -> None:
        batch_size = self._settings.projector_batch

        async def request_size() -> int:
            return batch_size

        async for msgs in puller.bursts(self._stopping, request_size=request_size):
            batch = [
                StoredEvent.decode(
                    m.metadata.sequence.stream, m.subject, m.data, m.metadata.timestamp
                )
                for m in msgs
            ]
            await asyncio.to_thread(_apply, engine, batch)
            await msgs[-1].ack()  # the consumer acks all: one ack covers the burst
        await puller.stop()


def _apply(engine: Engine, batch: Sequence[StoredEvent]) -> int:
    with Session(engine) as session:
        return jobs.apply_batch(session, batch)
