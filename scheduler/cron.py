"""The tick relay: every tick of a periodic schedule becomes exactly one job.

The nats-server fires each schedule (see :mod:`ferrisqueue.log.cronbook`) as a message on
``fq.tick.<name>`` in ``FQ_SCHEDULES``. Every scheduler instance pulls from the one durable
consumer ``fq-scheduler-ticks``, so JetStream hands each tick to one instance at a time; an
instance that dies holding a tick loses nothing, as the tick is delivered again after the
consumer's AckWait (10 s). For each tick the relay:

1. skips it (with a warning) when it is older than ``FQ_CRON_MISFIRE_GRACE``: a scheduler
   that was down for hours must not flood the queue with every tick it missed (the age is
   this machine's clock minus the server's storage time, so clocks must roughly agree);
2. reads the schedule's definition from ``FQ_CRON`` and skips the tick when the schedule
   was deleted or paused since it fired;
3. builds the job's ``submitted`` event with the job builder
   (:func:`ferrisqueue.domain.jobbuilder.build_job`: a payload that breaks its type's contract,
   say in a schedule stored before definitions were checked, creates no job and is logged)
   and a job id derived from the tick (:func:`ferrisqueue.domain.cron.tick_job_id`), then appends
   it guarded with "the job has no event yet" (``after_seq=0``);
4. acks the tick.

Exactly one job per tick, however many instances run and however often a tick is
delivered: every delivery of a tick computes the same job id, and the guarded append stores
a job's creation only into an empty history. A second attempt, whether a redelivery after a
crash between steps 3 and 4 or another instance, gets :class:`ConcurrentChange` (the server
checks the guard before the ``Nats-Msg-Id`` duplicate window) and simply acks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from ferrisqueue.domain.cron import CronSpec, tick_job_id
from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.jobbuilder import JobRefused, build_job
from ferrisqueue.domain.subjects import SCHEDULE_STREAM, tick_subject
from ferrisqueue.errors import (
    ConcurrentChange,
    NatsUnavailable,
    PayloadTooLarge,
    PublishOutcomeUnknown,
    PublishRejected,
)
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.log.service_loop import ConsumerLoop, Redeliver
from ferrisqueue.settings import Settings
from ferrisqueue.tracing import NO_TRACING, SpanKind, Tracing
from scheduler.cronfile import apply_cron_file, load_cron_file

log = logging.getLogger(__name__)

TICK_CONSUMER = "fq-scheduler-ticks"
_TICK_PREFIX = tick_subject("")
_PULL_BATCH = 16
_RETRY_DELAY = 1.0  # seconds before a tick that met a NATS hiccup is delivered again


@dataclass(frozen=True, slots=True)
class Tick:
    """One fired tick: the schedule's name, the tick's stream sequence and storage time."""

    name: str
    seq: int
    fired_at: datetime

    @classmethod
    def of(cls, msg: Delivery) -> Tick:
        return cls(msg.subject.removeprefix(_TICK_PREFIX), msg.seq, msg.stored_at)

    @property
    def job_id(self) -> str:
        return tick_job_id(self.name, self.seq, self.fired_at)


class Outcome(StrEnum):
    """What became of a tick."""

    CREATED = "created"
    ALREADY_CREATED = "already_created"
    MISFIRED = "misfired"
    NOT_ACTIVE = "not_active"  # deleted, paused, or a subject that names no schedule
    REFUSED = "refused"  # refused for good: a payload breaking its contract, too large, ...
    RETRY = "retry"  # NATS away or the outcome unknown: deliver the tick again


class TickRelay(ConsumerLoop):
    """Turns ticks into jobs; any number of instances may run.

    A :class:`~ferrisqueue.log.service_loop.ConsumerLoop`; before it first pulls it applies the
    cron file (if any) and repairs the server schedules."""

    name = "tick relay"
    stream = SCHEDULE_STREAM
    consumer = TICK_CONSUMER
    request_size = _PULL_BATCH

    def __init__(
        self,
        event_log: EventLog,
        book: CronBook,
        *,
        misfire_grace: float,
        cron_file: list[CronSpec] | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        """``cron_file``: the schedules of ``FQ_CRON_FILE``, already read and checked;
        ``tracing``: each tick's job starts a trace with its submit span."""
        super().__init__(event_log)
        self._log = event_log
        self._tracing = tracing
        self._book = book
        self._grace = timedelta(seconds=misfire_grace)
        self._cron_file = cron_file
        self._prepared = False

    @classmethod
    def for_settings(
        cls, event_log: EventLog, settings: Settings, *, tracing: Tracing = NO_TRACING
    ) -> TickRelay:
        """The relay of ``settings``; reads ``FQ_CRON_FILE`` now, so a broken file stops the
        scheduler at start (:class:`ConfigurationError` saying why)."""
        book = CronBook.for_settings(event_log, settings)
        cron_file = settings.cron_file
        return cls(
            event_log,
            book,
            misfire_grace=settings.cron_misfire_grace,
            cron_file=None if cron_file is None else load_cron_file(cron_file, book.job_types),
            tracing=tracing,
        )

    async def prepare(self) -> None:
        """Once: apply the cron file (if any), then repair the server schedules; then, as
        every life of the loop, make sure the tick consumer exists."""
        if not self._prepared:
            if self._cron_file is not None:
                await apply_cron_file(self._book, self._cron_file)
            await self._book.reconcile()
            # Not again when the loop restarts: applying the file again would undo what an
            # operator paused through the API since the start.
            self._prepared = True
        await super().prepare()

    async def handle(self, msg: Delivery) -> None:
        """Handle one tick message: acked once handled, or delivered again after a while
        when NATS was away or the append's outcome is unknown."""
        if await self.create_job(Tick.of(msg)) is Outcome.RETRY:
            raise Redeliver(_RETRY_DELAY)

    async def create_job(self, tick: Tick, *, now: datetime | None = None) -> Outcome:
        """Create the one job of ``tick`` unless it misfired or its schedule is not active."""
        age = (now or utcnow()) - tick.fired_at
        if age > self._grace:
            log.warning(
                "skipping tick %d of %s: it fired %.0f s ago, past the misfire grace of %.0f s",
                tick.seq,
                tick.name,
                age.total_seconds(),
                self._grace.total_seconds(),
            )
            return Outcome.MISFIRED
        if not is_token(tick.name):
            log.warning("ignoring a tick on a subject that names no schedule: %r", tick.name)
            return Outcome.NOT_ACTIVE
        try:
            definition = await self._book.get(tick.name)
            if definition is None or definition.paused:
                log.info("tick %d of %s: the schedule is deleted or paused", tick.seq, tick.name)
                return Outcome.NOT_ACTIVE
            event = build_job(
                definition.job,
                self._book.job_types,
                job_id=tick.job_id,
                now=tick.fired_at,
                actor=definition.actor,
            )
            with self._tracing.span(
                f"fq submit {event.type}",
                kind=SpanKind.PRODUCER,
                attributes={
                    "fq.job_id": event.job_id,
                    "fq.queue": event.queue,
                    "fq.job_type": event.type,
                    "fq.schedule": tick.name,
                },
            ) as span:
                await self._log.append(event, after_seq=0, headers=span.headers)
        except ConcurrentChange:
            return Outcome.ALREADY_CREATED  # another instance, or an earlier delivery, did it
        except (NatsUnavailable, PublishOutcomeUnknown) as exc:
            log.warning("tick %d of %s will be retried: %s", tick.seq, tick.name, exc)
            return Outcome.RETRY
        except (JobRefused, PayloadTooLarge, PublishRejected) as exc:
            log.error("tick %d of %s created no job: %s", tick.seq, tick.name, exc)
            return Outcome.REFUSED
        log.info("tick %d of %s -> job %s", tick.seq, tick.name, event.job_id)
        return Outcome.CREATED
