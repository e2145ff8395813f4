"""Worker middleware, in-process: the order of the hooks around an attempt and around the
worker's life, and the error policy (a hook's error never crashes the worker; only
``before_attempt`` and ``on_worker_start`` can change what happens)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferrisqueue.domain.events import Canceled, Failed, Succeeded
from ferrisqueue.errors import ConfigurationError, FerrisQueueError, Permanent
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.middleware import (
    AttemptOutcome,
    Middleware,
    MiddlewareStack,
    WorkerInfo,
)

pytestmark = pytest.mark.timeout(10)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SUCCEEDED = Succeeded(job_id="j1", queue="default", at=AT, attempt=1, result=[1], duration_ms=1)
RETRYING = Failed(
    job_id="j1", queue="default", at=AT, attempt=1, error="boom", error_type="error:x",
    retry_at=AT + timedelta(seconds=5),
)  # fmt: skip
FINAL = Failed(job_id="j1", queue="default", at=AT, attempt=3, error="boom", error_type="error:x")
CANCELED = Canceled(job_id="j1", queue="default", at=AT, reason="canceled while running")


class Recorder(Middleware):
    """Writes every hook it sees to a shared list as ``name.hook[:detail]``; ``fail``
    names hooks that raise instead."""

    def __init__(self, label: str, calls: list[str], *fail: str) -> None:
        self.label, self.calls, self.fail = label, calls, set(fail)

    def _saw(self, hook: str, detail: str = "") -> None:
        self.calls.append(f"{self.label}.{hook}{':' + detail if detail else ''}")
        if hook in self.fail:
            raise RuntimeError(f"{self.label}.{hook} broke")

    async def on_worker_start(self, worker: WorkerInfo) -> None:
        self._saw("start")

    async def on_worker_stop(self, worker: WorkerInfo) -> None:
        self._saw("stop")

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        self._saw("before")

    async def after_success(self, ctx: JobContext, result: Any) -> None:
        self._saw("success", repr(result))

    async def on_error(self, ctx: JobContext, error: BaseException, *, will_retry: bool) -> None:
        self._saw("error", f"{error}, retry={will_retry}")

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        self._saw("after", outcome.status.value)


def context(stack: MiddlewareStack | None = None) -> JobContext:
    async def report(fraction: float, message: str | None) -> None:
        pass

    resources = stack.resources if stack else MiddlewareStack().resources
    return JobContext(
        "j1", "default", "echo", 1, "w1", report, asyncio.get_running_loop(), resources
    )


def settings() -> Settings:
    return Settings(_env_file=None, worker_id="w1")  # type: ignore[call-arg]


async def test_before_hooks_run_outermost_first_and_after_hooks_innermost_first() -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls), Recorder("b", calls)])

    async with stack.attempt() as hooks:
        await hooks.before(context(), {})
        calls.append("handler")
        hooks.record(SUCCEEDED)

    assert calls == [
        "a.before",
        "b.before",
        "handler",
        "b.success:[1]",
        "b.after:succeeded",
        "a.success:[1]",
        "a.after:succeeded",
    ]


@pytest.mark.parametrize(
    ("outcome", "retry"), [(RETRYING, True), (FINAL, False)], ids=["retried", "final"]
)
async def test_a_failed_attempt_tells_on_error_the_error_and_whether_it_will_retry(
    outcome: Failed, retry: bool
) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls)])

    async with stack.attempt() as hooks:
        await hooks.before(context(), {})
        hooks.record(outcome, RuntimeError("boom"))

    assert calls == ["a.before", f"a.error:boom, retry={retry}", "a.after:failed"]


async def test_a_canceled_attempt_gets_after_attempt_but_neither_success_nor_error() -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls)])

    async with stack.attempt() as hooks:
        await hooks.before(context(), {})
        hooks.record(CANCELED)

    assert calls == ["a.before", "a.after:canceled"]


@pytest.mark.parametrize(
    "stop", [asyncio.CancelledError, FerrisQueueError], ids=["worker-stopping", "log-away"]
)
async def test_an_attempt_left_without_a_stored_outcome_is_reported_interrupted(
    stop: type[BaseException],
) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls)])

    with pytest.raises(stop):
        async with stack.attempt() as hooks:
            await hooks.before(context(), {})
            raise stop()

    assert calls == ["a.before", "a.after:interrupted"]


async def test_an_attempt_that_ends_before_its_hooks_are_reached_is_not_reported() -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls)])

    with pytest.raises(asyncio.CancelledError):  # e.g. the worker stopping at once
        async with stack.attempt():
            raise asyncio.CancelledError()

    assert calls == []


async def test_a_before_hook_error_is_the_attempts_and_middleware_further_in_never_see_it() -> None:
    calls: list[str] = []
    stack = MiddlewareStack(
        [Recorder("a", calls), Recorder("b", calls, "before"), Recorder("c", calls)]
    )

    with pytest.raises(RuntimeError, match=r"b\.before broke"):
        async with stack.attempt() as hooks:
            try:
                await hooks.before(context(), {})
            except RuntimeError as exc:  # what the executor does: the attempt failed with it
                hooks.record(FINAL, exc)
                raise

    # c never saw the attempt; b, which refused it, sees how it ended, as a does.
    assert calls == [
        "a.before",
        "b.before",
        "b.error:b.before broke, retry=False",
        "b.after:failed",
        "a.error:b.before broke, retry=False",
        "a.after:failed",
    ]


async def test_a_before_hook_can_refuse_an_attempt_with_permanent() -> None:
    class Refuse(Middleware):
        async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
            if payload.get("tenant") == "banned":
                raise Permanent("tenant banned")

    hooks = MiddlewareStack([Refuse()]).attempt()

    with pytest.raises(Permanent, match="tenant banned"):
        await hooks.before(context(), {"tenant": "banned"})


async def test_an_after_hook_error_is_logged_and_the_other_hooks_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls), Recorder("b", calls, "success", "after")])

    async with stack.attempt() as hooks:  # no exception escapes the block
        await hooks.before(context(), {})
        hooks.record(SUCCEEDED)

    assert calls[2:] == ["b.success:[1]", "b.after:succeeded", "a.success:[1]", "a.after:succeeded"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged == [
        "middleware Recorder: after_success failed for job j1 (ignored)",
        "middleware Recorder: after_attempt failed for job j1 (ignored)",
    ]


async def test_a_stuck_after_hook_is_cut_off_and_the_attempt_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()

    class Stuck(Middleware):
        async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
            await never.wait()

    stack = MiddlewareStack([Stuck()], hook_time_limit=0.05)

    async with stack.attempt() as hooks:
        await hooks.before(context(), {})
        hooks.record(SUCCEEDED)

    assert "middleware Stuck: after_attempt took over 0.05s for job j1 (ignored)" in caplog.messages


async def test_worker_start_runs_in_order_and_stop_in_reverse() -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls), Recorder("b", calls)])

    async with stack.running(settings()) as worker:
        calls.append("serving")
        assert worker.worker_id == "w1"

    assert calls == ["a.start", "b.start", "serving", "b.stop", "a.stop"]


async def test_a_middleware_that_cannot_start_refuses_the_worker_and_stops_the_started_ones() -> (
    None
):
    calls: list[str] = []
    stack = MiddlewareStack(
        [Recorder("a", calls), Recorder("b", calls, "start"), Recorder("c", calls)]
    )

    with pytest.raises(ConfigurationError, match=r"middleware Recorder could not start: b\.start"):
        async with stack.running(settings()):
            calls.append("serving")

    assert calls == ["a.start", "b.start", "a.stop"]


async def test_a_failing_stop_hook_is_logged_and_the_others_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    stack = MiddlewareStack([Recorder("a", calls), Recorder("b", calls, "stop")])

    async with stack.running(settings()):
        pass

    assert calls == ["a.start", "b.start", "b.stop", "a.stop"]
    assert "middleware Recorder: on_worker_stop failed (ignored)" in caplog.messages


async def test_a_resource_opened_at_start_reaches_handlers_by_type_and_closes_at_stop() -> None:
    class Pool:
        closed = False

    class Pooling(Middleware):
        async def on_worker_start(self, worker: WorkerInfo) -> None:
            worker.resources.add(Pool())

        async def on_worker_stop(self, worker: WorkerInfo) -> None:
            worker.resources.get(Pool).closed = True

    stack = MiddlewareStack([Pooling()])
    async with stack.running(settings()):
        pool = context(stack).resource(Pool)  # what a handler does
        assert not pool.closed

    assert pool.closed


async def test_the_middleware_base_does_nothing() -> None:
    stack = MiddlewareStack([Middleware()])

    async with stack.running(settings()), stack.attempt() as hooks:
        await hooks.before(context(), {})
        hooks.record(FINAL, RuntimeError("boom"))
