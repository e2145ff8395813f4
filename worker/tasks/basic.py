"""Small tasks for trying the system out and for tests: ``echo``, ``sleep``, ``fail``,
``flaky``."""

from __future__ import annotations

import asyncio
from typing import Any

from ferrisqueue.errors import Permanent
from worker.context import JobContext
from worker.registry import TaskRegistry


async def echo(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Returns its payload: the job's result is what was submitted."""
    return payload


async def sleep(ctx: JobContext, payload: dict[str, Any]) -> dict[str, float]:
    """Sleeps ``seconds`` (default 1), reporting progress ``steps`` times along the way."""
    seconds = float(payload.get("seconds", 1.0))
    steps = max(1, int(payload.get("steps", 1)))
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        if steps > 1:
            await ctx.progress(step / steps)
    return {"slept": seconds}


async def fail(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Always fails, with ``message``: shows how failures are recorded."""
    raise Permanent(str(payload.get("message", "failed on purpose")))


async def flaky(ctx: JobContext, payload: dict[str, Any]) -> dict[str, int]:
    """Fails (retryably) on its first ``failures`` attempts (default 1), then succeeds:
    shows retries with backoff."""
    if ctx.attempt <= int(payload.get("failures", 1)):
        raise RuntimeError(f"{payload.get('message', 'flaky')} (attempt {ctx.attempt})")
    return {"attempt": ctx.attempt}


def register(registry: TaskRegistry) -> None:
    registry.task("echo")(echo)
    registry.task("sleep")(sleep)
    registry.task("fail")(fail)
    registry.task("flaky")(flaky)
