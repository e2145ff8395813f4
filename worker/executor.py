"""Running one delivered job: record ``started``, run the handler under a lease and its time
limit, record the outcome, and only then ack.

Order matters for at-least-once delivery: the outcome event is stored in JetStream *before*
the ack, so a crash anywhere before the ack means the job is delivered again (attempt + 1);
a crash after the outcome is stored but before the ack runs the handler again, and the fold
ignores the second outcome. Handlers are told they may run twice (see ``JobContext``).

What a failure leads to:

* a retryable error (any exception, or the attempt's ``timeout``) with attempts left:
  ``failed`` with ``retry_at`` (backoff with jitter). The scheduler turns that into a server
  timer; nothing here waits, so a retrying job holds no consumer slot.
* a :class:`~ferrisqueue.errors.Permanent` error, or the last attempt: ``failed`` for good,
  then the job is dead-lettered (its creation message copied to ``FQ_DLQ``).
* a message that cannot be decoded, or a release of a job that was never submitted: dead-
  lettered with the reason and the original bytes, and terminated so it is never redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pydantic_core
from nats.aio.msg import Msg

from ferrisqueue.deadletter import dead_letter
from ferrisqueue.errors import ConcurrentChange, FerrisQueueError, PayloadTooLarge, Permanent
from ferrisqueue.eventlog import Delivery, EventLog, StoredEvent, fold_history
from ferrisqueue.events import (
    BaseEvent,
    Canceled,
    Failed,
    JobSpec,
    Progress,
    Redriven,
    Released,
    Started,
    Succeeded,
    utcnow,
)
from ferrisqueue.fold import JobState
from ferrisqueue.ids import is_token
from ferrisqueue.policy import QueuePolicy, for_job, retry_at
from ferrisqueue.states import JobStatus
from ferrisqueue.subjects import parse_job_subject
from worker.context import JobContext
from worker.lease import LeaseKeeper
from worker.registry import TaskRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Run:
    """One attempt of one job, as this executor is about to make it."""

    spec: JobSpec
    creation: StoredEvent
    """The stored event that created the job: what a dead letter keeps."""
    attempt: int
    budget_start: int
    """Attempts made before the job's budget began (its last redrive, else 0)."""
    policy: QueuePolicy
    trigger_seq: int
    """The stream sequence of the delivered message (recorded in ``started``)."""
    history: list[StoredEvent] | None = None
    """The job's events, when they were read to find its creation (a release or redrive)."""


class JobExecutor:
    """Executes delivered messages of the dispatch consumers."""

    def __init__(
        self,
        event_log: EventLog,
        registry: TaskRegistry,
        *,
        worker_id: str,
        policies: Callable[[str], QueuePolicy],
        leases: LeaseKeeper,
    ) -> None:
        self._log = event_log
        self._leases = leases
        self._registry = registry
        self._worker_id = worker_id
        self._policies = policies
        self._active: dict[str, asyncio.Task[Any]] = {}
        """The tasks whose handlers run now, by job id (for cancellation)."""
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
        delivery = Delivery.of(msg)
        stored = delivery.event(msg)
        run = await self._prepare(stored, delivery.deliveries)
        if isinstance(run, str):
            await self._reject_poison(msg, stored, run)
            return
        # On a first delivery the runnable message is the job's newest event, unless
        # something (a cancel, a duplicate's run) came after it; the guard tells.
        after_seq = stored.seq if delivery.deliveries == 1 else None
        if (started := await self._start(msg, run, after_seq)) is not None:
            await self._run(msg, started)

    async def _prepare(self, stored: StoredEvent, deliveries: int) -> _Run | str:
        """What to run for a delivered message, or why it can never run."""
        trigger = stored.event
        creation: StoredEvent | None
        history: list[StoredEvent] | None = None
        if trigger is None:
            return f"undecodable job: {stored.error.reason if stored.error else 'unknown'}"
        if isinstance(trigger, JobSpec):
            creation, budget_start = stored, 0
        else:
            # A release or redrive carries no payload: read the job's creation event, and
            # where its current budget of attempts began.
            history = await self._log.history(trigger.job_id)
            creation = next((s for s in history if isinstance(s.event, JobSpec)), None)
            if creation is None:
                return f"{trigger.kind.value} of a job that was never submitted"
            budget_start = max(
                (s.event.attempt for s in history if isinstance(s.event, Redriven)), default=0
            )
        assert isinstance(creation.event, JobSpec)
        before = trigger.attempt if isinstance(trigger, Released | Redriven) else 0
        spec = creation.event
        return _Run(
            spec=spec,
            creation=creation,
            attempt=before + deliveries,
            budget_start=budget_start,
            policy=for_job(self._policies(spec.queue), spec),
            trigger_seq=stored.seq,
            history=history,
        )

    def cancel(self, job_id: str) -> bool:
        """Cancel the handler of ``job_id`` if it runs here (a ``cancel_requested`` came)."""
        task = self._active.get(job_id)
        if task is None:
            return False
        self._canceling.add(job_id)
        task.cancel()
        return True

    async def _start(self, msg: Msg, run: _Run, after_seq: int | None) -> _Run | None:
        """Record ``started``, guarded by the job's newest sequence, so that a job that was
        canceled, finished, or started by a duplicate delivery in the meantime is not run
        (then the message is acked and None returned); returns the attempt to run.

        A release or redrive is always checked against the job's events (read already to
        find its creation): a stale or duplicate one may be the job's newest event, so the
        guard alone would not stop it. An attempt that this very message started before
        and that never ended was lost (JetStream delivers the message again only when its
        lease expired, or when a restarted server forgot the delivery, which also resets
        the delivery count): the next attempt runs."""
        job, last, history = run.spec, after_seq, run.history
        for _ in range(_START_TRIES):
            if last is None or history is not None:
                if history is None:
                    history = await self._log.history(job.job_id)
                last = history[-1].seq if history else 0
                state = fold_history(history)
                if state is not None and _lost_by(state, history, run.trigger_seq):
                    run = replace(run, attempt=max(run.attempt, state.attempts + 1))
                if state is not None and _must_not_start(state, run.attempt):
                    await self._settle(run, state)
                    log.info("not running %s: it is %s", job.job_id, state.status.value)
                    await msg.ack()
                    return None
                history = None
            started = Started(
                job_id=job.job_id,
                queue=job.queue,
                at=utcnow(),
                attempt=run.attempt,
                worker=self._worker_id,
                trigger_seq=run.trigger_seq,
            )
            try:
                await self._log.append(started, after_seq=last)
                return run
            except ConcurrentChange:
                last = None  # re-read the job and decide again
        raise ConcurrentChange(f"{job.job_id} kept changing while starting it")

    async def _settle(self, run: _Run, state: JobState) -> None:
        """Finish what a crashed predecessor left half done before this redelivery."""
        job = run.spec
        if state.cancel_requested and not state.status.is_terminal:
            await self._log.append(
                Canceled(
                    job_id=job.job_id, queue=job.queue, at=utcnow(), reason="canceled before it ran"
                )
            )
        elif state.status is JobStatus.FAILED and not state.dead_lettered:
            # Its final failure is stored, its dead-lettering may not be.
            await self._dead_letter(run, state.last_error or "failed", state.attempts)

    async def _run(self, msg: Msg, run: _Run) -> None:
        job, attempt = run.spec, run.attempt

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
        # The handler runs in this task (no task of its own per job): cancel() cancels it.
        task = asyncio.current_task()
        assert task is not None
        self._active[job.job_id] = task
        limit = asyncio.timeout(run.policy.timeout)
        try:
            with self._leases.hold(msg, run.policy.ack_wait):
                async with limit:
                    result = await self._registry.runner(job.type)(ctx, job.payload)
            pydantic_core.to_json(result)  # a result that cannot be stored fails the job here
        except asyncio.CancelledError:
            if job.job_id not in self._canceling:
                raise  # the worker is stopping: execute() hands the job back
            task.uncancel()  # this cancellation is the job's outcome, not the task's end
            outcome = at(Canceled, reason="canceled while running")
        except Exception as exc:  # the handler's failure is the job's outcome, not ours
            timed_out = isinstance(exc, TimeoutError) and limit.expired()
            outcome = self._failure(run, exc, timed_out, _ms_since(began))
        else:
            outcome = at(Succeeded, attempt=attempt, result=result, duration_ms=_ms_since(began))
        finally:
            self._active.pop(job.job_id, None)
            self._canceling.discard(job.job_id)
        try:
            await self._log.append(outcome)
        except PayloadTooLarge as exc:  # a result too large to store fails the job instead
            outcome = self._failure(run, Permanent(str(exc)), False, _ms_since(began))
            await self._log.append(outcome)
        if isinstance(outcome, Failed) and outcome.retry_at is None:
            await self._dead_letter(run, outcome.error, attempt, permanent=_is_permanent(outcome))
        await msg.ack()
        self.processed += 1
        self.failed += isinstance(outcome, Failed)

    def _failure(self, run: _Run, exc: Exception, timed_out: bool, duration_ms: float) -> Failed:
        """The ``failed`` event of this attempt: retried later, or final."""
        if timed_out:
            error, kind = f"timed out after {run.policy.timeout:g}s", "timeout"
        else:
            error, kind = str(exc) or type(exc).__name__, _error_type(exc)
        now = utcnow()
        retry = None
        if not isinstance(exc, Permanent):
            retry = retry_at(
                run.policy,
                attempt=run.attempt,
                budget_start=run.budget_start,
                now=now,
                draw=random.random(),
            )
        return Failed(
            job_id=run.spec.job_id,
            queue=run.spec.queue,
            at=now,
            attempt=run.attempt,
            error=error,
            error_type=kind,
            retry_at=retry,
            duration_ms=duration_ms,
        )

    async def _dead_letter(
        self, run: _Run, error: str, attempts: int, *, permanent: bool = False
    ) -> None:
        used, allowed = attempts - run.budget_start, run.policy.max_attempts
        why = "permanent error" if permanent else f"attempts exhausted ({used} of {allowed})"
        await dead_letter(
            self._log,
            queue=run.spec.queue,
            job_id=run.spec.job_id,
            original=run.creation.data,
            reason=f"{why}: {error}",
            dedup=f"attempt-{attempts}",
            lineage={
                "Stream-Seq": run.creation.seq,
                "Attempts": attempts,
                "Last-Worker": self._worker_id,
                "Last-Error": error,
            },
        )
        log.warning("dead-lettered %s after attempt %d: %s", run.spec.job_id, attempts, error)

    async def _reject_poison(self, msg: Msg, stored: StoredEvent, reason: str) -> None:
        """A message that can never run: dead-letter it as it arrived, with the reason, and
        terminate it so it is never delivered again. The worker goes on."""
        log.warning("%s on %s", reason, msg.subject)
        queue, job_id = _job_of(msg.subject, stored.seq)
        await dead_letter(
            self._log,
            queue=queue,
            job_id=job_id,
            original=msg.data,
            reason=reason,
            dedup=f"seq-{stored.seq}",
            lineage={"Stream-Seq": stored.seq, "Subject": msg.subject},
        )
        # msg.term() cannot carry a reason; the protocol's "+TERM <reason>" can.
        await msg.respond(f"+TERM {reason}".encode())


_START_TRIES = 3


def _lost_by(state: JobState, history: list[StoredEvent], trigger_seq: int) -> bool:
    """Whether the job's running attempt was started from the message at ``trigger_seq``."""
    if state.status is not JobStatus.RUNNING:
        return False
    start = next((s.event for s in reversed(history) if isinstance(s.event, Started)), None)
    if start is None:
        return False
    return start.trigger_seq == trigger_seq and start.attempt == state.attempts


def _must_not_start(state: JobState, attempt: int) -> bool:
    """Finished, canceled (or asked to be), or already at this attempt elsewhere."""
    return state.status.is_terminal or state.cancel_requested or attempt <= state.attempts


def _job_of(subject: str, seq: int) -> tuple[str, str]:
    """The queue and job id a message's subject names; a poison message whose subject names
    no valid job is filed under its stream sequence instead, so it is still kept."""
    try:
        tokens = parse_job_subject(subject)
    except ValueError:
        parts = subject.split(".")
        queue = parts[2] if len(parts) > 2 and is_token(parts[2]) else "unknown"
        return queue, f"seq-{seq}"
    return tokens.queue, tokens.job_id


def _error_type(exc: BaseException) -> str:
    kind = "permanent" if isinstance(exc, Permanent) else "error"
    return f"{kind}:{type(exc).__module__}.{type(exc).__qualname__}"


def _is_permanent(failed: Failed) -> bool:
    return failed.error_type.startswith("permanent:")


def _ms_since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.debug("ignored while handing back: %s", exc)
