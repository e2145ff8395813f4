"""Running one delivered job: record ``started``, run the handler under a lease and its time
limit, record the outcome, and only then ack.

A job of a limited queue first waits, its message held and leased, until the queue's
concurrency and rate limits let it start (:mod:`worker.limits`).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pydantic_core

from ferrisqueue.domain.commands import CANCELED_BEFORE_RUN, Decision, decide_start
from ferrisqueue.domain.dependencies import has_children, settled
from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    Failed,
    JobSpec,
    Progress,
    Redriven,
    Released,
    Started,
    Succeeded,
    Throttled,
    utcnow,
    worker_actor,
)
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.limits import LimitKind, Scope
from ferrisqueue.domain.policy import QueuePolicy, for_job, retry_at
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.stored import StoredEvent
from ferrisqueue.domain.subjects import parse_job_subject
from ferrisqueue.errors import ConcurrentChange, FerrisQueueError, PayloadTooLarge, Permanent
from ferrisqueue.log.deadletter import dead_letter
from ferrisqueue.log.eventlog import COMMAND_TRIES, EventLog
from ferrisqueue.log.port import Delivery
from ferrisqueue.tracing import trace_headers
from worker.context import JobContext
from worker.lease import LeaseKeeper
from worker.limits import Admission, Permit
from worker.middleware import Attempt, MiddlewareStack
from worker.registry import TaskRegistry

log = logging.getLogger(__name__)

EARLY_CANCEL_MEMORY = 60.0
"""Seconds a cancel request for a job that does not run here is remembered (every worker of
the queue hears every request: most are for jobs elsewhere)."""


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
    trace: dict[str, str] = field(default_factory=dict)
    """The job's W3C trace context, as the delivered message carried it: every event of
    this attempt carries it on (so a retry's timer, and its ``released``, do too)."""
    tail: _Tail = field(default_factory=lambda: _Tail())
    """What this attempt knows of the job's newest events (set once ``started`` is stored)."""


@dataclass(slots=True)
class _Tail:
    """The job's newest sequence this attempt knows of, and whether a child waits for the
    job: the outcome is appended guarded by that sequence, so a ``dependent`` note stored
    during the run makes the append read the job again and learn of it (then the attempt
    ends with a ``settled`` note for the dependency gate, which reads no other job's end)."""

    seq: int = 0
    children: bool = False


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
        middleware: MiddlewareStack | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._log = event_log
        self._admission = admission
        self._middleware = middleware or MiddlewareStack()
        self._leases = leases
        self._registry = registry
        self._worker_id = worker_id
        self._actor = worker_actor(worker_id)
        self._policies = policies
        self._active: dict[str, asyncio.Task[Any]] = {}
        """The tasks whose handlers run now, by job id (for cancellation)."""
        self._early: dict[str, float] = {}
        """Cancel requests for jobs not running here when they came, by job id, with when
        (oldest first): a job's ``started`` and its ``cancel_requested`` can reach this
        worker in one read, and the notice is handled before the start it follows."""
        self._canceling: set[str] = set()
        self.processed = 0
        """Jobs whose outcome this executor recorded."""
        self.failed = 0
        """Of those, the ones that failed."""

    async def execute(self, msg: Delivery) -> None:
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

    async def _execute(self, msg: Delivery) -> None:
        stored = StoredEvent.of(msg)
        run = await self._prepare(stored, msg.deliveries, trace_headers(msg.headers))
        if isinstance(run, str):
            await self._reject_poison(msg, stored, run)
            return
        # On a first delivery the runnable message is presumed to be the job's whole history
        # (no read), unless something (a cancel, a duplicate's run) came after it; the
        # guard tells.
        presumed = run.history
        if presumed is None and msg.deliveries == 1:
            presumed = [stored]
        admission, permit = self._admission, None
        if admission is not None and (
            scopes := admission.scopes(run.spec.queue, run.spec.concurrency_key)
        ):
            permit, waited = await self._admit(admission, msg, run, scopes)
            if waited:
                presumed = None  # its ``throttled`` came after the delivered message
            # Without a permit the job was canceled while it waited: the guarded start
            # below refuses it (and records ``canceled`` if the gateway has not).
        try:
            if (started := await self._start(msg, run, presumed)) is not None:
                # The middleware's after-hooks run as this block is left: after the ack, or
                # with "interrupted" when the attempt ends without a stored outcome.
                async with self._middleware.attempt() as hooks:
                    await self._run(msg, started, hooks)
        finally:
            if admission is not None and permit is not None:
                await admission.release(permit)

    async def _admit(
        self, admission: Admission, msg: Delivery, run: _Run, scopes: list[Scope]
    ) -> tuple[Permit | None, bool]:
        """Hold ``msg`` (its lease kept, no delivery spent) until the queue's limits let the
        job start (:mod:`worker.limits`); record one ``throttled`` per reason it waits for.
        The permit (None: a cancel was requested meanwhile, see :meth:`cancel`), and
        whether it waited."""
        waited = False

        async def on_wait(kind: LimitKind, detail: str) -> None:
            nonlocal waited
            waited = True
            job = run.spec
            throttled = Throttled(
                job_id=job.job_id,
                queue=job.queue,
                at=utcnow(),
                attempt=run.attempt,
                reason=kind.value,
                detail=detail,
                actor=self._actor,
            )
            await self._log.append(throttled, headers=run.trace)

        job_id = run.spec.job_id
        task = asyncio.current_task()
        assert task is not None
        early = self._activate(job_id, task)  # a cancel ends the wait, as it ends a handler
        try:
            if early:
                await self._cancel_now(job_id)
            with self._leases.hold(msg, run.policy.ack_wait):
                permit = await admission.admit(job_id, scopes, run.policy.ack_wait, on_wait)
        except asyncio.CancelledError:
            if job_id not in self._canceling:
                raise  # the worker is stopping: execute() hands the job back
            task.uncancel()
            return None, waited
        finally:
            self._active.pop(job_id, None)
            self._canceling.discard(job_id)
        return permit, waited

    async def _prepare(
        self, stored: StoredEvent, deliveries: int, trace: dict[str, str]
    ) -> _Run | str:
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
            trace=trace,
        )

    def cancel(self, job_id: str) -> bool:
        """Cancel the handler of ``job_id`` if it runs here, or its wait for the queue's
        limits (a ``cancel_requested`` came); else remember the request for
        :data:`EARLY_CANCEL_MEMORY` seconds, in case the job is about to start here."""
        task = self._active.get(job_id)
        if task is None:
            now = time.monotonic()
            self._early.pop(job_id, None)
            self._early[job_id] = now
            while next(iter(self._early.values())) < now - EARLY_CANCEL_MEMORY:
                del self._early[next(iter(self._early))]
            return False
        self._canceling.add(job_id)
        task.cancel()
        return True

    def _activate(self, job_id: str, task: asyncio.Task[Any]) -> bool:
        """Register ``task`` as running ``job_id`` (cancellable); whether a cancel request
        came just before (the caller then cancels itself where it handles a cancel)."""
        self._active[job_id] = task
        return self._early.pop(job_id, None) is not None

    async def _cancel_now(self, job_id: str) -> None:
        """Cancel this very task for ``job_id`` and let the cancellation land here, where the
        caller's handler of a requested cancel catches it."""
        self.cancel(job_id)
        await asyncio.sleep(0)

    async def _start(
        self, msg: Delivery, run: _Run, presumed: list[StoredEvent] | None
    ) -> _Run | None:
        """Record ``started`` (:func:`~ferrisqueue.domain.commands.decide_start`, guarded by the
        job's newest sequence), so that a job that was canceled, finished, or started by a
        duplicate delivery in the meantime is not run (then the message is acked and None
        returned); returns the attempt to run, which is the next one when this very
        message's earlier attempt was lost.

        ``presumed`` is the history to decide on first: the one read to find the job's
        creation (a release or redrive is always checked against it, as a stale or
        duplicate one may be the job's newest event, so the guard alone would not stop
        it), or on a first delivery the delivered message alone; else it is read."""

        def decide(state: JobState | None, history: Sequence[BaseEvent]) -> Decision[Started]:
            return decide_start(
                state,
                history,
                job=run.spec,
                attempt=run.attempt,
                trigger_seq=run.trigger_seq,
                worker=self._worker_id,
                now=utcnow(),
            )

        result = await self._log.command(
            run.spec.job_id, decide, history=presumed, headers=run.trace
        )
        if result.rejection is not None:
            assert result.state is not None  # only a known job is refused a start
            await self._settle(run, result.state)
            log.info("not running %s: it is %s", run.spec.job_id, result.state.status.value)
            await msg.ack()
            return None
        (started,) = result.events
        # The history the start was decided on is the job's up to ``started``: a note in it
        # is known now, a later one makes the outcome's guarded append read the job again.
        tail = _Tail(result.appended[-1].seq, has_children(s.event for s in result.history))
        return replace(run, attempt=started.attempt, tail=tail)

    async def _settle(self, run: _Run, state: JobState) -> None:
        """Finish what a crashed predecessor left half done before this redelivery: the
        cancel, the dead-lettering, or the ``settled`` note of a job that has ended."""
        job = run.spec
        ended = state.status.is_terminal
        if state.cancel_requested and not ended:
            await self._log.append(
                Canceled(
                    job_id=job.job_id,
                    queue=job.queue,
                    at=utcnow(),
                    reason=CANCELED_BEFORE_RUN,
                    actor=self._actor,
                ),
                headers=run.trace,
            )
            ended = True
        elif state.status is JobStatus.FAILED and not state.dead_lettered:
            # Its final failure is stored, its dead-lettering may not be.
            await self._dead_letter(run, state.last_error or "failed", state.attempts)
        if ended:  # rare (a redelivery), so a read of the job is fine
            await self._log.announce_settled(job.job_id, actor=self._actor, headers=run.trace)

    async def _run(self, msg: Delivery, run: _Run, hooks: Attempt) -> None:
        job, attempt = run.spec, run.attempt

        def at(kind: type[BaseEvent], **fields: Any) -> Any:
            return kind(
                job_id=job.job_id, queue=job.queue, at=utcnow(), actor=self._actor, **fields
            )

        async def report(fraction: float, message: str | None) -> None:
            seq = await self._log.append(
                at(Progress, attempt=attempt, fraction=fraction, message=message),
                headers=run.trace,
            )
            run.tail.seq = max(run.tail.seq, seq)

        ctx = JobContext(
            job.job_id,
            job.queue,
            job.type,
            attempt,
            self._worker_id,
            report,
            asyncio.get_running_loop(),
            self._middleware.resources,
            trace=run.trace,
        )
        began = time.perf_counter()
        outcome: BaseEvent
        error: BaseException | None = None
        # The handler runs in this task (no task of its own per job): cancel() cancels it.
        task = asyncio.current_task()
        assert task is not None
        early = self._activate(job.job_id, task)
        limit = asyncio.timeout(run.policy.timeout)
        try:
            if early:
                await self._cancel_now(job.job_id)
            with self._leases.hold(msg, run.policy.ack_wait):
                async with limit:
                    await hooks.before(ctx, job.payload)  # raising fails the attempt instead
                    result = await self._registry.runner(job.type)(ctx, job.payload)
            pydantic_core.to_json(result)  # a result that cannot be stored fails the job here
        except asyncio.CancelledError:
            if job.job_id not in self._canceling:
                raise  # the worker is stopping: execute() hands the job back
            task.uncancel()  # this cancellation is the job's outcome, not the task's end
            outcome = at(Canceled, reason="canceled while running")
        except Exception as exc:  # the handler's failure is the job's outcome, not ours
            error = exc
            timed_out = isinstance(exc, TimeoutError) and limit.expired()
            outcome = self._failure(run, exc, timed_out, _ms_since(began))
        else:
            outcome = at(Succeeded, attempt=attempt, result=result, duration_ms=_ms_since(began))
        finally:
            self._active.pop(job.job_id, None)
            self._canceling.discard(job.job_id)
        try:
            await self._end(run, outcome)
        except PayloadTooLarge as exc:  # a result too large to store fails the job instead
            error = Permanent(str(exc))
            outcome = self._failure(run, error, False, _ms_since(began))
            await self._end(run, outcome)
        hooks.record(outcome, error)  # stored: if the dead letter fails, a redelivery ends it
        log.debug("attempt %d of %s %s: %s", attempt, job.type, job.job_id, outcome.kind.value)
        final = not isinstance(outcome, Failed) or outcome.retry_at is None
        if isinstance(outcome, Failed) and final:
            await self._dead_letter(run, outcome.error, attempt, permanent=_is_permanent(outcome))
        if final and run.tail.children:
            await self._announce(run)
        await msg.ack()
        self.processed += 1
        self.failed += isinstance(outcome, Failed)

    async def _end(self, run: _Run, outcome: BaseEvent) -> None:
        """Store the attempt's outcome, guarded by the job's newest sequence the attempt
        knows: if anything came meanwhile (a ``dependent`` note, a cancel request), read the
        job again, note whether a child waits, and append on the fresh sequence."""
        tail = run.tail
        for _ in range(COMMAND_TRIES):
            try:
                seq = await self._log.append(outcome, after_seq=tail.seq, headers=run.trace)
            except ConcurrentChange:
                history = await self._log.history(run.spec.job_id)
                tail.seq = history[-1].seq if history else 0
                tail.children = tail.children or has_children(s.event for s in history)
                continue
            tail.seq = max(tail.seq, seq)
            return
        raise ConcurrentChange(f"job {run.spec.job_id} kept changing; its outcome is not stored")

    async def _announce(self, run: _Run) -> None:
        """Tell the dependency gate that the job ended with children waiting."""
        note = settled(run.spec, actor=self._actor, now=utcnow())
        await self._log.append(note, headers=run.trace)

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
            actor=self._actor,
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
            actor=self._actor,
            lineage={
                "Stream-Seq": run.creation.seq,
                "Attempts": attempts,
                "Last-Worker": self._worker_id,
                "Last-Error": error,
            },
        )
        log.warning("dead-lettered %s after attempt %d: %s", run.spec.job_id, attempts, error)

    async def _reject_poison(self, msg: Delivery, stored: StoredEvent, reason: str) -> None:
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
            actor=self._actor,
            lineage={"Stream-Seq": stored.seq, "Subject": msg.subject},
        )
        await msg.term(reason)


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
