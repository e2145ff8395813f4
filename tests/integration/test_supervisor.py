"""``fq up``'s supervisor (ferrisqueue.cli.supervisor) on small real processes: restarts with
backoff, the crash-loop report with the child's last lines, and the stop order (NATS last,
nothing restarted once stopping began)."""

from __future__ import annotations

import io
import logging
import signal
import sys
from pathlib import Path

import pytest

from ferrisqueue.cli.supervisor import Supervisor, spawn
from ferrisqueue.domain.restarts import CrashLoop, RestartPolicy
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

FAST = RestartPolicy(base=0.05, cap=0.2, reset_after=30, crash_loop_exits=3, crash_loop_window=30)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def on_sigterm(marker: Path, name: str, *, linger: float = 0.0) -> str:
    """A child that says ``ready`` once it handles SIGTERM, and on SIGTERM waits ``linger``
    seconds, appends ``name`` to ``marker`` and exits 0."""
    return (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        f"    time.sleep({linger})\n"
        f"    open({str(marker)!r}, 'a').write({name!r} + '\\n')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(1)\n"
    )


async def test_a_child_that_keeps_dying_is_restarted_then_reported_as_a_crash_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fq.up")
    echo = io.BytesIO()
    supervisor = Supervisor(FAST, echo=echo)
    steady = supervisor.add(
        "steady", lambda: spawn(python("import time; time.sleep(60)"), {}, None)
    )
    broken = supervisor.add(
        "broken",
        lambda: spawn(python("print('bad value for FQ_SOMETHING'); raise SystemExit(3)"), {}, None),
    )

    async def check() -> object:
        return supervisor.check()

    verdict = await wait_until(check, lambda v: v is not None, timeout=20, what="a crash loop")

    assert verdict == (broken, CrashLoop(recent_exits=3, window=30))
    assert broken.history.restarts == 2
    restarts = [r.getMessage() for r in caplog.records if "restarting it in" in r.getMessage()]
    assert len(restarts) == 2
    assert "broken (pid" in restarts[0] and "exited with code 3" in restarts[0]
    assert "restarting it in 0.1s (restart 2; exits in the last 30s: 2)" in restarts[1]
    report = caplog.records[-1]
    assert report.levelno == logging.ERROR
    text = report.getMessage()
    assert text.startswith(f"broken (pid {broken.process.pid if broken.process else '?'})")
    assert "3 exits within 30s, a crash loop; stopping everything" in text
    assert "    | bad value for FQ_SOMETHING" in text
    assert echo.getvalue().count(b"bad value for FQ_SOMETHING\n") == 3  # copied to the terminal
    assert steady.process is not None and steady.process.poll() is None  # untouched

    supervisor.stop_all(timeout=5)
    assert steady.process.returncode == -signal.SIGTERM


async def test_stopping_drops_pending_restarts_and_stops_the_stop_last_child_after_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fq.up")
    marker = tmp_path / "stopped"
    echo = io.BytesIO()
    policy = FAST.model_copy(update={"base": 10.0, "cap": 10.0, "crash_loop_window": 60})
    supervisor = Supervisor(policy, echo=echo)
    nats = supervisor.add(
        "nats", lambda: spawn(python(on_sigterm(marker, "nats")), {}, None), stop_last=True
    )
    worker = supervisor.add(
        "worker", lambda: spawn(python(on_sigterm(marker, "worker", linger=0.5)), {}, None)
    )
    flaky = supervisor.add("flaky", lambda: spawn(python("raise SystemExit(1)"), {}, None))

    async def pending() -> float | None:
        supervisor.check()
        return flaky.restart_at

    await wait_until(pending, lambda at: at is not None, timeout=10, what="flaky's restart")

    async def both_ready() -> int:
        return echo.getvalue().count(b"ready\n")

    await wait_until(both_ready, lambda n: n == 2, timeout=10, what="handlers installed")

    supervisor.stop_all(timeout=5)

    assert marker.read_text().split() == ["worker", "nats"]  # NATS only after the worker
    assert (
        nats.process and nats.process.returncode,
        worker.process and worker.process.returncode,
    ) == (0, 0)
    assert flaky.restart_at is None
    logged = len(caplog.records)
    supervisor.check()  # a late check notices no exit and restarts nothing
    assert caplog.records[logged:] == []
    started = [r for r in caplog.records if r.getMessage().startswith("started flaky")]
    assert len(started) == 1
