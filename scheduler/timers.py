"""The timer relay: turns a job's wait into a server-side ``@at`` timer, and back into an event.

A job waits in two cases: it was created ``scheduled`` (run at ``run_at``), or an attempt
``failed`` with ``retry_at``. Nothing in FerrisQueue keeps time in memory for it. The relay
reads those events from the log (durable pull consumer ``fq-scheduler-timers`` on
``FQ_EVENTS``, filters ``fq.job.*.*.scheduled``, ``...failed``, ``...canceled``) and for each
waiting job stores one message-schedule in ``FQ_SCHEDULES``:

* subject ``fq.timer.<queue>.<job_id>`` (one timer per job; purging the subject cancels it),
* ``Nats-Schedule: @at <due, RFC 3339 UTC, milliseconds rounded up>``,
* ``Nats-Schedule-Target: fq.due.<queue>.<job_id>``, ``Nats-Schedule-TTL: 24h`` (the fired
  message expires from ``FQ_SCHEDULES``; the copy sourced into ``FQ_EVENTS`` is kept, as that
  stream does not allow per-message TTLs and ignores the header),
* ``Nats-Msg-Id: <job_id>:timer:<attempt>``, body ``{"attempt": <attempt>, "actor":
  "scheduler"}``,
* the job's W3C trace context (``traceparent``, ``tracestate``) copied from the event, which
  the server fires with the body: the ``released`` event carries it, and the next attempt's
  span joins the job's trace (:mod:`ferrisqueue.tracing`). With tracing on, arming the timer
  is a span of that trace too (``fq timer``, its due time and attempt as attributes).

At the due time the *server* fires the body on ``fq.due.<queue>.<job_id>``; ``FQ_EVENTS``
sources it, transformed to ``fq.job.<queue>.<job_id>.released``, so the body becomes the job's
``Released(attempt=...)`` (queue, job id and event from the subject, ``at`` from the storage
time) and the queue's dispatch consumer hands it to a worker. A ``canceled`` event purges the
job's timer subject. A ``failed`` without ``retry_at`` needs nothing.

Leadership and safety notes
---------------------------
* **No leader.** Every scheduler instance pulls from the same durable consumer, so JetStream
  gives each event to one instance at a time; an instance that dies holding events loses
  nothing: they are redelivered to another after the consumer's AckWait (5 s).
* **Ack after the timer is stored.** A crash between the store and the ack repeats the event;
  the repeat carries the same ``Nats-Msg-Id`` and is dropped by ``FQ_SCHEDULES``' duplicate
  window (2 minutes), even if the first timer already fired and left the subject.
* **Only a job that still waits for this timer gets one.** Before arming, the relay folds the
  job's history and decides the release (:func:`~ferrisqueue.domain.commands.decide_release`): the
  job must be pending for exactly this wait (same sub-state, attempt and due time). A
  consumer re-created from the start of the log, or a ``failed`` of an attempt that lost its
  lease, therefore arms nothing, instead of releasing long-finished jobs.
* **Cancel races.** The gateway appends ``canceled`` and then purges the timer; this relay
  purges it again when the ``canceled`` event arrives (durably: it is an event). An instance
  that armed a timer while another handled the cancel re-reads the job afterwards and purges
  the timer if the job was canceled or asked to be in the meantime
  (:func:`~ferrisqueue.domain.commands.release_abandoned`), so the timer cannot outlive a cancel.
  This is not :meth:`EventLog.command`'s guarded append: the timer goes to
  ``FQ_SCHEDULES``, where no guard can name the job's sequence in ``FQ_EVENTS``, so the
  relay checks after the write and withdraws it instead of preventing it. Events of one job
  within a burst are handled in log order.
* **The last line of defence** is the fold: a ``released`` whose attempt is not the job's
  current one, or that reaches a job that is not waiting, is rejected (recorded, no effect),
  and a worker does not start a job that is finished, canceled or past that attempt.
* Undecodable events are acked and logged here: the workers and the projector deal with
  poison; a timer cannot be built from it.
* An event whose timer could not be stored (NATS away, say) is nak'd with backoff and comes
  back, while the relay goes on with the others: the error policy of every scheduler loop
  (:mod:`ferrisqueue.log.service_loop`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ferrisqueue.domain.commands import Rejection, decide_release, release_abandoned
from ferrisqueue.domain.events import (
    SCHEDULER_ACTOR,
    BaseEvent,
    Canceled,
    Failed,
    JobSpec,
    Scheduled,
)
from ferrisqueue.domain.states import PendingReason
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import (
    DEFAULT_PRIORITY,
    EVENT_STREAM,
    SCHEDULE_STREAM,
    due_subject,
    parse_job_subject,
    timer_subject,
)
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.log.service_loop import ConsumerLoop
from ferrisqueue.tracing import NO_TRACING, SpanKind, Tracing, trace_headers

log = logging.getLogger(__name__)

TIMER_CONSUMER = "fq-scheduler-timers"

FIRED_TTL = "24h"
"""How long a fired timer stays in ``FQ_SCHEDULES`` (``FQ_EVENTS`` sources it within
milliseconds; the TTL only keeps the schedule stream from growing)."""

BATCH = 256
"""Most events asked for per pull request; one burst's jobs are handled concurrently."""


@dataclass(frozen=True, slots=True)
class Timer:
    """One job's pending timer: release it at ``due`` after ``attempt`` attempts."""

    queue: str
    job_id: str
    due: datetime
    attempt: int
    waiting: PendingReason
    priority: int = DEFAULT_PRIORITY
    """The job's lane: the timer fires into ``released`` (or ``released-p<n>``)."""

    @property
    def subject(self) -> str:
        return timer_subject(self.queue, self.job_id)

    @property
    def body(self) -> bytes:
        """The ``released`` event's body once fired (the rest comes from the subject)."""
        return json.dumps({"attempt": self.attempt, "actor": SCHEDULER_ACTOR}).encode()

    def headers(self) -> dict[str, str]:
        return {
            "Nats-Schedule": at_schedule(self.due),
            "Nats-Schedule-Target": due_subject(self.queue, self.job_id, self.priority),
            "Nats-Schedule-TTL": FIRED_TTL,
            "Nats-Msg-Id": f"{self.job_id}:timer:{self.attempt}",
        }


def at_schedule(due: datetime) -> str:
    """``@at`` and ``due`` in RFC 3339 UTC with milliseconds, rounded *up* so a timer never
    fires before its due time (``@at 2026-11-28T05:00:01.250Z``)."""
    utc = due.astimezone(UTC)
    micros = utc.microsecond
    millis = math.ceil(micros / 1000)
    whole = utc.replace(microsecond=0) + timedelta(milliseconds=millis)
    return f"@at {whole.strftime('%Y-%m-%dT%H:%M:%S')}.{whole.microsecond // 1000:03d}Z"


def timer_for(event: BaseEvent) -> Timer | None:
    """The timer an event asks for: ``scheduled`` at ``run_at`` after 0 attempts, ``failed``
    with ``retry_at`` after its attempt; any other event none."""
    if isinstance(event, Scheduled):
        return Timer(event.queue, event.job_id, event.run_at, 0, PendingReason.SCHEDULED)
    if isinstance(event, Failed) and event.retry_at is not None:
        return Timer(
            event.queue, event.job_id, event.retry_at, event.attempt, PendingReason.RETRYING
        )
    return None


class TimerRelay(ConsumerLoop):
    """Arms and cancels jobs' timers in ``FQ_SCHEDULES`` from the events in the log.

    A :class:`~ferrisqueue.log.service_loop.ConsumerLoop`: an event whose timer could not be
    stored is nak'd with backoff and comes back; the relay goes on with the others."""

    name = "timer relay"
    stream = EVENT_STREAM
    consumer = TIMER_CONSUMER

    def __init__(
        self, event_log: EventLog, *, batch: int = BATCH, tracing: Tracing = NO_TRACING
    ) -> None:
        super().__init__(event_log, request_size=batch)
        self._log = event_log
        self._tracing = tracing

    async def handle_burst(self, burst: list[Delivery]) -> None:
        """Handle a burst: different jobs concurrently, one job's events in log order."""
        by_job: dict[str, list[Delivery]] = {}
        for msg in burst:
            by_job.setdefault(_job_key(msg), []).append(msg)

        async def in_order(msgs: list[Delivery]) -> None:
            for msg in msgs:
                await self.process(msg)

        await asyncio.gather(*(in_order(msgs) for msgs in by_job.values()))

    async def handle(self, msg: Delivery) -> None:
        """Act on one event (arm, keep or cancel its job's timer)."""
        await self._act(StoredEvent.of(msg), trace_headers(msg.headers))

    async def _act(self, stored: StoredEvent, trace: dict[str, str]) -> None:
        event = stored.event
        if event is None:
            log.warning(
                "skipping undecodable event %s (seq %d): %s",
                stored.subject,
                stored.seq,
                stored.error.reason if stored.error else "unknown",
            )
            return
        if isinstance(event, Canceled):
            await self._cancel(event.queue, event.job_id)
            return
        if timer_for(event) is None:
            return
        history = await self._log.history(event.job_id)
        # The trigger as the history decodes it: a plain-NATS ``delay`` counts from the
        # storage time, and the timer must be armed for the time the fold will compare.
        trigger = next((s.event for s in history if s.seq == stored.seq and s.event), event)
        timer = timer_for(trigger)
        if timer is None:
            return
        spec = next((s.event for s in history if isinstance(s.event, JobSpec)), None)
        if spec is not None:  # a retry is released into its job's lane
            timer = dataclasses.replace(timer, priority=spec.priority)
        release = decide_release(
            fold_history(history), waiting=timer.waiting, attempt=timer.attempt, due=timer.due
        )
        if isinstance(release, Rejection):
            log.info(
                "no timer for %s: the job no longer waits for it (%s)",
                stored.subject,
                release.reason,
            )
            return
        with self._tracing.span(
            "fq timer",
            kind=SpanKind.INTERNAL,
            parent=trace,
            attributes={
                "fq.job_id": timer.job_id,
                "fq.queue": timer.queue,
                "fq.attempt": timer.attempt,
                "fq.waiting": timer.waiting.value,
                "fq.due": timer.due.isoformat(),
            },
        ):
            # The job's context, not this span's: every attempt is a child of the submit.
            await self._log.publish(
                timer.subject,
                timer.body,
                stream=SCHEDULE_STREAM,
                headers={**trace, **timer.headers()},
            )
        log.debug("armed %s: %s", timer.subject, timer.headers()["Nats-Schedule"])
        # A cancel may have come between the fold above and the store (handled by another
        # instance, or by the gateway, whose purge found nothing yet): look again.
        newest = await self._log.newest(timer.job_id)
        if newest is not None and history and newest.seq == history[-1].seq:
            return  # nothing happened to the job since
        if release_abandoned(fold_history(await self._log.history(timer.job_id))):
            await self._cancel(timer.queue, timer.job_id)

    async def _cancel(self, queue: str, job_id: str) -> None:
        await self._log.purge(timer_subject(queue, job_id), stream=SCHEDULE_STREAM)
        log.debug("removed the timer of %s", job_id)


def _job_key(msg: Delivery) -> str:
    try:
        return parse_job_subject(msg.subject).job_id
    except ValueError:
        return msg.subject
