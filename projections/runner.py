"""The projector process: read the event log in order and apply it to the read store.

Position lives in the read store (the ``projection_checkpoints`` row written with the data),
not in NATS. At start the durable consumer ``fq-projector`` is re-created to deliver from
checkpoint + 1, so a fresh store rebuilds from the first event, a restarted projector
resumes exactly where its last commit left off, and nothing waits for an AckWait to expire.

Several projectors may run for one read store (for availability): the one holding the
store's lock (:mod:`ferrisqueue.store.leadership`) projects, the others stand by and take
over when it dies. Each read store needs its own durable consumer (``FQ_PROJECTOR_CONSUMER``):
two stores on one consumer would each receive part of the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session

from ferrisqueue.errors import ConfigurationError
from ferrisqueue.eventlog import StoredEvent
from ferrisqueue.ids import new_job_id
from ferrisqueue.natsconn import close_quietly, connect
from ferrisqueue.puller import Puller
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.db import init_schema, make_engine
from ferrisqueue.store.leadership import StoreLock
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
STANDBY_RETRY = 1.0
"""Seconds between a standby projector's attempts to take the lead."""


class Projector:
    """Runs the jobs projection until stopped."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Follow the log for ever (until stopped), as the leader of the read store."""
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        lock = StoreLock(engine, "projector")
        try:
            if await self._lead(lock):
                await self._project(engine, self._settings.projector_consumer, None)
        finally:
            lock.release()
            engine.dispose()

    async def catch_up(self, *, until: datetime | None = None) -> int:
        """One-shot: apply the log up to its current end (or to ``until``, by the time
        JetStream stored each message) and return the position reached.

        ``fq projections rebuild`` and ``fq replay --until`` run this into a fresh store.
        """
        engine = make_engine(self._settings.effective_database_url)
        init_schema(engine)
        lock = StoreLock(engine, "projector")
        try:
            if not lock.try_acquire():
                raise ConfigurationError(
                    "a projector is running on this read store; stop it, or rebuild into "
                    "another store (--database-url)"
                )
            consumer = f"fq-rebuild-{new_job_id()}"
            return await self._project(engine, consumer, until, one_shot=True)
        finally:
            lock.release()
            engine.dispose()

    async def _lead(self, lock: StoreLock) -> bool:
        """Wait until this projector holds the store's lock (or is stopped)."""
        if not lock.try_acquire():
            log.info("another projector leads this read store; standing by")
        while not lock.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), STANDBY_RETRY)
            if self._stopping.is_set():
                return False
            lock.try_acquire()
        log.info("leading the read store's projection")
        return True

    async def _project(
        self, engine: Engine, consumer: str, until: datetime | None, *, one_shot: bool = False
    ) -> int:
        nc = await connect(
            self._settings.effective_nats_url,
            name="fq-projector",
            connect_timeout=self._settings.nats_connect_timeout,
        )
        try:
            await ensure_streams(nc, self._settings)
            with Session(engine) as session:
                position = queries.checkpoint(session, jobs.NAME)
            last = (await nc.jetstream().stream_info(EVENT_STREAM)).state.last_seq
            if one_shot and position >= last:
                return position
            puller = await self._puller(nc, consumer, position, temporary=one_shot)
            log.info("projector resuming after stream sequence %d", position)
            try:
                return await self._consume(
                    puller, engine, position, last_seq=last if one_shot else None, until=until
                )
            finally:
                if one_shot:
                    await delete_consumer(nc, EVENT_STREAM, consumer)
        finally:
            await close_quietly(nc)

    async def _puller(self, nc: Client, name: str, position: int, *, temporary: bool) -> Puller:
        config: dict[str, Any] = {
            **load_consumer_definition(EVENT_STREAM, PROJECTOR_CONSUMER),
            "durable_name": name,
        }
        if position > 0:
            config.update(deliver_policy="by_start_sequence", opt_start_seq=position + 1)
        if temporary:  # removed by the server if the one-shot run dies before deleting it
            config["inactive_threshold"] = 60 * 1_000_000_000
        # The start position cannot be changed on an existing consumer: re-create it.
        await delete_consumer(nc, EVENT_STREAM, name)
        await ensure_consumer(nc, EVENT_STREAM, config)
        puller = Puller(nc, EVENT_STREAM, name, expires=FETCH_TIMEOUT)
        await puller.start()
        return puller

    async def _consume(
        self,
        puller: Puller,
        engine: Engine,
        position: int,
        *,
        last_seq: int | None,
        until: datetime | None,
    ) -> int:
        """Apply bursts until stopped, or past ``last_seq`` / ``until`` (one-shot runs)."""
        batch_size = self._settings.projector_batch
        done = self._stopping if last_seq is None else asyncio.Event()

        async def request_size() -> int:
            return batch_size

        async for msgs in puller.bursts(done, request_size=request_size):
            batch = [
                StoredEvent.decode(
                    m.metadata.sequence.stream, m.subject, m.data, m.metadata.timestamp
                )
                for m in msgs
            ]
            wanted = [
                e
                for e in batch
                if (last_seq is None or e.seq <= last_seq)
                and (until is None or e.stored_at <= until)
            ]
            if wanted:
                position = await asyncio.to_thread(_apply, engine, wanted)
            await msgs[-1].ack()  # the consumer acks all: one ack covers the burst
            if len(wanted) < len(batch) or (last_seq is not None and position >= last_seq):
                done.set()
        await puller.stop()
        return position


def _apply(engine: Engine, batch: Sequence[StoredEvent]) -> int:
    with Session(engine) as session:
        return jobs.apply_batch(session, batch)
