"""Reading the system from the outside while it runs: filling a queue, counting stored events,
first/last storage times, and the projector's lag behind the log.

Everything is measured from the event log itself (and the read store's checkpoint), never
from inside the services, so the numbers hold for whatever the services do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime

import nats.js.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import Engine
from sqlmodel import Session

from bench.harness import percentile
from ferrisqueue.domain.events import Submitted, encode_event, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.store import queries

QUEUE = "default"
TASK = "echo"
"""The no-op job: ``echo`` returns its (empty) payload (worker/tasks/basic.py)."""


def submitted(queue: str = QUEUE, by: str = "fq-bench") -> Submitted:
    """A fresh no-op job's ``submitted`` event."""
    return Submitted(job_id=new_job_id(), queue=queue, at=utcnow(), type=TASK, actor=by)


async def publish_pipeline(nc: Client, count: int, *, in_flight: int = 1000) -> float:
    """Append ``count`` no-op submissions with ``publish_async`` (at most ``in_flight``
    awaiting their ack) and wait for every ack; returns the seconds it took."""
    js = nc.jetstream(publish_async_max_pending=in_flight)
    began = time.perf_counter()
    futures = []
    for _ in range(count):
        event = submitted()
        futures.append(
            await js.publish_async(
                event.subject,
                encode_event(event),
                stream=EVENT_STREAM,
                headers={"Nats-Msg-Id": event.dedup_key()},
            )
        )
    await asyncio.gather(*futures)  # raises if any publish was refused
    return time.perf_counter() - began


class Counter:
    """How many stored events match ``subject``: a consumer that is never read from, so its
    ``num_pending`` is the count (cheap for the server, nothing delivered to us)."""

    def __init__(self, nc: Client, subject: str, name: str, start_seq: int = 0) -> None:
        self._js = nc.jetstream()
        self._subject = subject
        self._name = name
        self._start_seq = start_seq

    async def __aenter__(self) -> Counter:
        config = ConsumerConfig(
            durable_name=self._name,
            filter_subject=self._subject,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE
            if self._start_seq
            else DeliverPolicy.ALL,
            opt_start_seq=self._start_seq or None,
        )
        await self._js.add_consumer(EVENT_STREAM, config)
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._js.delete_consumer(EVENT_STREAM, self._name)

    async def count(self) -> int:
        info = await self._js.consumer_info(EVENT_STREAM, self._name)
        pending: int = info.num_pending or 0
        return pending


async def first_stored(nc: Client, subject: str, start_seq: int = 1) -> datetime:
    """When JetStream stored the first message on ``subject`` (from ``start_seq``)."""
    msg = await nc.jetstream().get_msg(EVENT_STREAM, seq=start_seq, subject=subject, next=True)
    assert msg.time is not None
    return msg.time


async def last_stored(nc: Client, subject: str) -> datetime:
    """When JetStream stored the newest message on ``subject`` (wildcards allowed)."""
    msg = await nc.jetstream().get_last_msg(EVENT_STREAM, subject)
    assert msg.time is not None
    return msg.time


async def last_seq(nc: Client, stream: str = EVENT_STREAM) -> int:
    info = await nc.jetstream().stream_info(stream)
    seq: int = info.state.last_seq
    return seq


def checkpoint(engine: Engine) -> int:
    """The ``jobs`` projection's position (last stream sequence applied). The benchmarks
    run it as one partition (their services get no ``FQ_`` setting of the caller's), whose
    checkpoint every tree an A/B compares (bench/ab.py) names alike."""
    with Session(engine) as session:
        return queries.checkpoint(session, queries.JOBS_PROJECTION)


def completed(engine: Engine) -> int:
    """Jobs the read store shows as completed."""
    with Session(engine) as session:
        counts = queries.status_counts(session)
    return sum(n for (_, status), n in counts.items() if status == "completed")


@dataclass
class LagSampler:
    """Samples the projector's lag every ``interval``: events the log holds beyond the
    checkpoint, and the age of the oldest one not applied yet (0 when caught up)."""

    nc: Client
    engine: Engine
    interval: float = 0.1
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    """(monotonic time, lag in events, lag in seconds)."""

    async def run(self, stop: asyncio.Event) -> None:
        js = self.nc.jetstream()
        while not stop.is_set():
            position = await asyncio.to_thread(checkpoint, self.engine)
            head = await last_seq(self.nc)
            lag_seconds = 0.0
            if head > position:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    oldest = await js.get_msg(EVENT_STREAM, seq=position + 1)
                    assert oldest.time is not None
                    lag_seconds = max(0.0, (utcnow() - oldest.time).total_seconds())
            self.samples.append((time.monotonic(), max(0, head - position), lag_seconds))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    def summary(self, since: float | None = None, until: float | None = None) -> dict[str, float]:
        """p50 / p99 / max of both lags over the samples taken in [since, until]."""
        window = [
            s
            for s in self.samples
            if (since is None or s[0] >= since) and (until is None or s[0] <= until)
        ]
        events = [float(s[1]) for s in window]
        seconds = [s[2] for s in window]
        return {
            "samples": len(window),
            "lag_events_p50": percentile(events, 50) or 0.0,
            "lag_events_p99": percentile(events, 99) or 0.0,
            "lag_events_max": max(events, default=0.0),
            "lag_s_p50": percentile(seconds, 50) or 0.0,
            "lag_s_p99": percentile(seconds, 99) or 0.0,
            "lag_s_max": max(seconds, default=0.0),
        }
