"""Running one delivered job: record ``started``, run the handler under a lease, record the
outcome, and only then ack.

Order matters for at-least-once delivery: the outcome event is stored in JetStream *before*
the ack, so a crash anywhere before the ack means the job is delivered again (attempt + 1);
a crash after the outcome is stored but before the ack runs the handler again, and the fold
ignores the second outcome. Handlers are told they may run twice (see ``JobContext``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pydantic_core
from nats.aio.msg import Msg

from ferrisqueue.errors import (
    ConcurrentChange,
    DecodeError,
    FerrisQueueError,
    PayloadTooLarge,
    Permanent,
)
from ferrisqueue.eventlog import EventLog, StoredEvent, fold_history
from ferrisqueue.events import (
    BaseEvent,
    Canceled,
    DeadLettered,
    Failed,
    Progress,
    Released,
    Started,
    Submitted,
    Succeeded,
    utcnow,
)
from ferrisqueue.fold import JobState
from ferrisqueue.subjects import parse_job_subject
from worker.context import JobContext
from worker.lease import leased
from worker.registry import TaskRegistry

log = logging.getLogger(__name__)


class JobExecutor:
    """Executes delivered messages of the dispatch consumer."""

    def __init__(
        self, event_log: EventLog, registry: TaskRegistry, *, worker_id: str, ack_wait: float
    ) -> None:
        self._log = event_log
        self._registry = registry
        self._worker_id = worker_id
        self._ack_wait = ack_wait
        self._active: dict[str, asyncio.Future[Any]] = {}
        """Handlers running now, by job id (for cancellation)."""
        self._canceling: set[str] = set()
        self.processed = 0
        """Jobs whose outcome this executor recorded."""
        self.failed = 0
        """Of those, the ones that failed."""

    async def execute(self, msg: Msg) -> None:
        """Handle one message to the end; never raises (a worker must outlive any job)."""
        try:
            await self._execute(msg)
        except asyncio.CancelledError:
            # The worker is stopping and the grace period ran out: hand the job back now so
            # another worker can take it without waiting for AckWait.
            await _quietly(msg.nak())
            raise
        except FerrisQueueError as exc:
            # Could not record an event (NATS away): leave the message unacked, so it is
            # delivered again after AckWait. Nothing is lost.
            log.warning("job %s not finished, will be redelivered: %s", msg.subject, exc)
        except Exception:
            log.exception("unexpected error handling %s; it will be redelivered", msg.subject)

    async def _execute(self, msg: Msg) -> None:
        meta = msg.metadata
        stored = StoredEvent.decode(meta.sequence.stream, msg.subject, msg.data, meta.timestamp)
        if stored.event is None:
            await self._reject_poison(msg, stored.error)
            return
        submitted = await self._submission(stored.event)
        if submitted is None:
            await self._reject_poison(
                msg,
                DecodeError("no submitted event for this job", subject=msg.subject, data=msg.data),
            )
            return
        released_after = stored.event.attempt if isinstance(stored.event, Released) else 0
        attempt = released_after + meta.num_delivered
        # On a first delivery the runnable message is the job's newest event, unless
        # something (a cancel, a duplicate's run) came after it; the guard tells.
        after_seq = meta.sequence.stream if meta.num_delivered == 1 else None
        if await self._start(msg, submitted, attempt, after_seq):
            await self._run(msg, submitted, attempt)

    def cancel(self, job_id: str) -> bool:
        """Cancel the handler of ``job_id`` if it runs here (a ``cancel_requested`` came)."""
        handler = self._active.get(job_id)
        if handler is None:
            return False
        self._canceling.add(job_id)
        handler.cancel()
        return True

    async def _start(self, msg: Msg, job: Submitted, attempt: int, after_seq: int | None) -> bool:
        """Record ``started``, guarded by the job's newest sequence, so that a job that was
        canceled, finished, or started by a duplicate delivery in the meantime is not run
        (then the message is acked and False returned)."""
        last = after_seq
        for _ in range(_START_TRIES):
            if last is None:
                history = await self._log.history(job.job_id)
                last = history[-1].seq if history else 0
                state = fold_history(history)
                if state is not None and _must_not_start(state, attempt):
                    if state.cancel_requested and not state.status.is_terminal:
                        await self._log.append(
                            Canceled(
                                job_id=job.job_id,
                                queue=job.queue,
                                at=utcnow(),
                                reason="canceled before it ran",
                            )
                        )
                    log.info("not running %s: it is %s", job.job_id, state.status.value)
                    await msg.ack()
                    return False
            started = Started(
                job_id=job.job_id,
                queue=job.queue,
                at=utcnow(),
                attempt=attempt,
                worker=self._worker_id,
            )
            try:
                await self._log.append(started, after_seq=last)
                return True
            except ConcurrentChange:
                last = None  # re-read the job and decide again
        raise ConcurrentChange(f"{job.job_id} kept changing while starting it")

    async def _submission(self, event: BaseEvent) -> Submitted | None:
        if isinstance(event, Submitted):
            return event
        # A release carries no payload: read it from the job's submitted event.
        for stored in await self._log.history(event.job_id):
            if isinstance(stored.event, Submitted):
                return stored.event
        return None

    async def _run(self, msg: Msg, job: Submitted, attempt: int) -> None:
        def at(kind: type[BaseEvent], **fields: Any) -> Any:
            return kind(job_id=job.job_id, queue=job.queue, at=utcnow(), **fields)

        async def report(fraction: float, message: str | None) -> None:
            await self._log.append(
                at(Progress, attempt=attempt, fraction=fraction, message=message)
            )

        ctx = JobContext(
            job.job_id,
            job.queue,
            job.type,
            attempt,
            self._worker_id,
            report,
            asyncio.get_running_loop(),
        )
        began = time.perf_counter()
        outcome: BaseEvent
        handler = asyncio.ensure_future(self._call(job, ctx))
        self._active[job.job_id] = handler
        try:
            async with leased(msg, self._ack_wait):
                result = await handler
            pydantic_core.to_json(result)  # a result that cannot be stored fails the job here
        except asyncio.CancelledError:
            if job.job_id not in self._canceling:
                handler.cancel()  # the worker is stopping: execute() hands the job back
                raise
            outcome = at(Canceled, reason="canceled while running")
        except Exception as exc:  # the handler's failure is the job's outcome, not ours
            outcome = at(
                Failed,
                attempt=attempt,
                error=str(exc) or type(exc).__name__,
                error_type=_error_type(exc),
                duration_ms=_ms_since(began),
            )
        else:
            outcome = at(Succeeded, attempt=attempt, result=result, duration_ms=_ms_since(began))
        finally:
            self._active.pop(job.job_id, None)
            self._canceling.discard(job.job_id)
        try:
            await self._log.append(outcome)
        except PayloadTooLarge as exc:  # a result too large to store fails the job instead
            outcome = at(
                Failed,
                attempt=attempt,
                error=str(exc),
                error_type=_error_type(Permanent()),
                duration_ms=_ms_since(began),
            )
            await self._log.append(outcome)
        await msg.ack()
        self.processed += 1
        self.failed += isinstance(outcome, Failed)

    async def _call(self, job: Submitted, ctx: JobContext) -> Any:
        return await self._registry.runner(job.type)(ctx, job.payload)

    async def _reject_poison(self, msg: Msg, error: DecodeError | None) -> None:
        """A message that can never run: record why (when the subject names a job) and
        terminate it so it is never delivered again. The worker goes on."""
        reason = f"undecodable job: {error.reason if error else 'unknown'}"
        log.warning("%s on %s", reason, msg.subject)
        job = _job_of(msg.subject)
        if job is not None:
            queue, job_id = job
            await self._log.append(
                DeadLettered(job_id=job_id, queue=queue, at=utcnow(), reason=reason)
            )
        # msg.term() cannot carry a reason; the protocol's "+TERM <reason>" can.
        await msg.respond(f"+TERM {reason}".encode())


_START_TRIES = 3


def _must_not_start(state: JobState, attempt: int) -> bool:
    """Finished, canceled (or asked to be), or already at this attempt elsewhere."""
    return state.status.is_terminal or state.cancel_requested or attempt <= state.attempts


def _job_of(subject: str) -> tuple[str, str] | None:
    try:
        tokens = parse_job_subject(subject)
    except ValueError:
        return None
    return tokens.queue, tokens.job_id


def _error_type(exc: BaseException) -> str:
    kind = "permanent" if isinstance(exc, Permanent) else "error"
    return f"{kind}:{type(exc).__module__}.{type(exc).__qualname__}"


def _ms_since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.debug("ignored while handing back: %s", exc)
