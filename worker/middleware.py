"""Worker middleware: code that runs around every attempt of every job, and once when the
worker starts and stops. Metrics, tracing, logging, a rate limit, a connection pool: the
concerns that cut across job types live here, not in ``if`` chains in the executor.

Subclass :class:`Middleware` and override the hooks you need; every hook is a no-op by
default and every hook is ``async`` (do blocking work with ``asyncio.to_thread``).

**When each hook runs**, for a worker with middleware ``[A, B]`` (A outermost):

=====================  ==================================================================
``on_worker_start``    A, then B; before the worker connects and takes its first job.
                       Opens resources (``worker.resources.add(pool)``).
``before_attempt``     A, then B; for each attempt, after ``started`` is recorded, under
                       the job's lease, time limit and cancellation, just before the
                       handler. Raising fails the attempt instead of running the handler.
``after_success``      B, then A; the handler returned and ``succeeded`` is recorded.
``on_error``           B, then A; the attempt failed and ``failed`` is recorded; with the
                       exception and ``will_retry`` (the job comes back after a backoff).
``after_attempt``      B, then A (each right after its ``after_success`` / ``on_error``);
                       after *every* attempt its ``before_attempt`` was called for, with its
                       :class:`AttemptOutcome`: also canceled ones, and ``interrupted`` ones
                       (the worker stopped or could not record the outcome; the job will be
                       delivered again). The place to close what ``before_attempt`` opened.
``on_worker_stop``     B, then A; after the last job finished or was handed back. Closes
                       resources. Only middleware whose ``on_worker_start`` returned.
=====================  ==================================================================

The after-hooks of a middleware run for each attempt its ``before_attempt`` was called for
(even if it raised), innermost first. They run after the outcome is recorded in the log and
the message acked, so they observe the outcome and cannot change it.

**Errors in hooks** never crash the worker:

* ``on_worker_start`` raising stops the worker from starting (the middleware already started
  are stopped again): a worker without its resources would only fail every job.
* ``before_attempt`` raising is the attempt's error, as if the handler had raised it: raise
  :class:`~ferrisqueue.errors.Permanent` to refuse a job for good, anything else to have the
  attempt retried after its backoff. The handler does not run; the middleware further in do
  not see the attempt at all, the raising one and those further out get ``on_error`` and
  ``after_attempt`` (so a middleware that refuses an attempt also counts it).
* ``after_success``, ``on_error``, ``after_attempt`` and ``on_worker_stop`` raising is logged
  (with the job and the middleware) and ignored: the outcome is already stored, and the other
  middleware's hooks still run. Each call is cut off after :data:`HOOK_TIME_LIMIT` seconds,
  so a stuck hook cannot hold a job's slot or the worker's stop for ever.

**At least once.** A job's handler may run more than once (a worker can die after the work
but before the ack), and so may every attempt hook, for the same job and even the same
attempt number. If the worker dies, the after-hooks of that attempt do not run at all (and
if it cannot record the outcome, only ``after_attempt`` runs, with ``interrupted``). Hooks are
for observing and guarding attempts, not for effects that must happen exactly once; key any
effect on ``ctx.job_id`` (and ``ctx.attempt``).

**Registering.** From code: ``Worker(settings, registry, middleware=[Timing(), ...])``, in
order, outermost first. From a plugin: an entry point in the ``ferrisqueue.middleware``
group naming a factory ``(settings: Settings) -> Middleware``, called at worker start (a
plugin reads its own settings there, see :mod:`worker.plugin_settings`); ``python -m worker``
loads every installed one, ordered by entry point name.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import TracebackType
from typing import Any

from ferrisqueue.domain.events import BaseEvent, Failed, Succeeded
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.resources import Resources

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ferrisqueue.middleware"

HOOK_TIME_LIMIT = 10.0
"""Seconds an after-hook or ``on_worker_stop`` may take before it is cancelled (and logged)."""


class AttemptStatus(enum.StrEnum):
    """How an attempt ended, as :meth:`Middleware.after_attempt` sees it."""

    SUCCEEDED = "succeeded"
    """The handler returned; ``succeeded`` is recorded."""
    FAILED = "failed"
    """The handler (or a ``before_attempt``) raised, or the attempt timed out; ``failed`` is
    recorded."""
    CANCELED = "canceled"
    """The job's cancellation was requested while it ran; ``canceled`` is recorded."""
    INTERRUPTED = "interrupted"
    """No outcome was recorded: the worker is stopping (the job is handed back) or could not
    reach the log. The job will be delivered again."""


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What became of one attempt."""

    status: AttemptStatus
    result: Any = None
    """The stored result (JSON-ready), when it succeeded."""
    error: BaseException | None = None
    """What failed it, when it failed (a ``TimeoutError`` for its time limit)."""
    will_retry: bool = False
    """It failed and the job will be tried again after its backoff (not dead-lettered)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What the start and stop hooks see: the worker's settings and its resources."""

    settings: Settings
    resources: Resources

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id


class Middleware:
    """Base of worker middleware: documented no-op hooks (see the module docstring for when
    each runs and what an error in it does). Override only the ones you need."""

    @property
    def name(self) -> str:
        """How logs name this middleware."""
        return type(self).__name__

    async def on_worker_start(self, worker: WorkerInfo) -> None:
        """Once per worker, before its first job: open resources, add them to
        ``worker.resources``. Raising stops the worker from starting."""

    async def on_worker_stop(self, worker: WorkerInfo) -> None:
        """Once per worker, after its last job: close what ``on_worker_start`` opened."""

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Before the handler, for every attempt; ``payload`` is the job's payload as
        submitted (do not change it). Raise to fail the attempt instead
        (:class:`~ferrisqueue.errors.Permanent` to fail the job without a retry)."""

    async def after_success(self, ctx: JobContext, result: Any) -> None:
        """After an attempt succeeded and its result (JSON-ready) is recorded."""

    async def on_error(self, ctx: JobContext, error: BaseException, *, will_retry: bool) -> None:
        """After an attempt failed and its failure is recorded; ``will_retry``: the job comes
        back after a backoff, else it is dead-lettered."""

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        """After every attempt this middleware's ``before_attempt`` was called for, however
        it ended."""


class MiddlewareStack:
    """One worker's middleware, in order (outermost first), and the resources they open.
    Owns the order of the hooks and the error policy, so the executor only says when."""

    def __init__(
        self, middleware: Iterable[Middleware] = (), *, hook_time_limit: float = HOOK_TIME_LIMIT
    ) -> None:
        self.middleware = tuple(middleware)
        self.resources = Resources()
        self._hook_time_limit = hook_time_limit

    @contextlib.asynccontextmanager
    async def running(self, settings: Settings) -> AsyncIterator[WorkerInfo]:
        """Start every middleware, in order; on leaving, stop the started ones in reverse.
        A start that fails stops the others again and raises
        :class:`~ferrisqueue.errors.ConfigurationError`."""
        worker = WorkerInfo(settings, self.resources)
        started: list[Middleware] = []
        try:
            for middleware in self.middleware:
                try:
                    await middleware.on_worker_start(worker)
                except Exception as exc:
                    raise ConfigurationError(
                        f"middleware {middleware.name} could not start: {exc}"
                    ) from exc
                started.append(middleware)
            yield worker
        finally:
            for middleware in reversed(started):
                await self._observe(middleware, "on_worker_stop", middleware.on_worker_stop, worker)

    def attempt(self) -> Attempt:
        """The hooks of one attempt: ``async with stack.attempt() as hooks``, then
        ``await hooks.before(ctx, payload)`` just before the handler and
        ``hooks.record(outcome, error)`` once the outcome is stored; the after-hooks run when
        the block is left."""
        return Attempt(self)

    async def _observe(
        self,
        middleware: Middleware,
        hook: str,
        call: Callable[..., Awaitable[None]],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Run a hook that cannot change anything any more: its errors are logged, not raised,
        and it is cut off after the hook time limit."""
        if getattr(type(middleware), hook) is getattr(Middleware, hook):
            return  # not overridden, so a no-op: not worth its time limit's timer per attempt
        limit = asyncio.timeout(self._hook_time_limit)
        try:
            async with limit:
                await call(*args, **kwargs)
        except Exception:
            job = getattr(args[0], "job_id", None) if args else None
            why = f"took over {self._hook_time_limit:g}s" if limit.expired() else "failed"
            log.exception(
                "middleware %s: %s %s%s (ignored)",
                middleware.name,
                hook,
                why,
                f" for job {job}" if job else "",
            )


class Attempt:
    """The middleware's hooks around one attempt (see :meth:`MiddlewareStack.attempt`)."""

    def __init__(self, stack: MiddlewareStack) -> None:
        self._stack = stack
        self._ctx: JobContext | None = None
        self._entered: list[Middleware] = []
        """The middleware whose ``before_attempt`` was called: the ones whose after-hooks run."""
        self._outcome: AttemptOutcome | None = None

    async def before(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        """Every ``before_attempt``, outermost first; the first that raises stops the rest
        and its exception is the attempt's."""
        self._ctx = ctx
        for middleware in self._stack.middleware:
            # Entered before the call: a middleware that refuses the attempt (or half-opens
            # something for it) still sees how it ended.
            self._entered.append(middleware)
            await middleware.before_attempt(ctx, payload)

    def record(self, outcome: BaseEvent, error: BaseException | None = None) -> None:
        """The attempt's stored outcome event (``succeeded``, ``failed`` or ``canceled``) and,
        for a failure, the exception behind it."""
        if isinstance(outcome, Succeeded):
            self._outcome = AttemptOutcome(AttemptStatus.SUCCEEDED, result=outcome.result)
        elif isinstance(outcome, Failed):
            self._outcome = AttemptOutcome(
                AttemptStatus.FAILED, error=error, will_retry=outcome.retry_at is not None
            )
        else:
            self._outcome = AttemptOutcome(AttemptStatus.CANCELED)

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Left without a recorded outcome: the worker is stopping (a CancelledError passes
        # through here), or the outcome could not be stored. Either way the job comes again.
        ctx = self._ctx
        if ctx is None:  # it ended before the hooks were reached: they saw nothing
            return
        outcome = self._outcome or AttemptOutcome(AttemptStatus.INTERRUPTED)
        observe = self._stack._observe
        for middleware in reversed(self._entered):
            if outcome.status is AttemptStatus.SUCCEEDED:
                await observe(
                    middleware, "after_success", middleware.after_success, ctx, outcome.result
                )
            elif outcome.status is AttemptStatus.FAILED and outcome.error is not None:
                await observe(
                    middleware,
                    "on_error",
                    middleware.on_error,
                    ctx,
                    outcome.error,
                    will_retry=outcome.will_retry,
                )
            await observe(middleware, "after_attempt", middleware.after_attempt, ctx, outcome)


def load_middleware(settings: Settings) -> list[Middleware]:
    """Every installed plugin's middleware (entry point group ``ferrisqueue.middleware``), in
    entry point name order. Each entry point names a factory ``(settings) -> Middleware``;
    one that fails (a plugin's invalid settings, say) is a
    :class:`~ferrisqueue.errors.ConfigurationError` naming the plugin."""
    loaded = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            middleware = entry.load()(settings)
        except Exception as exc:
            raise ConfigurationError(f"plugin {entry.name} ({entry.value}): {exc}") from exc
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(
                f"plugin {entry.name} ({entry.value}) gave {middleware!r}, not a Middleware"
            )
        loaded.append(middleware)
        log.info("loaded middleware plugin %s (%s)", entry.name, entry.value)
    return loaded
