"""The process side of ``fq up``: start children, notice the ones that die, restart them.

The decisions (how long to wait, when a crash loop has begun) are the pure rules of
:mod:`ferrisqueue.domain.restarts`; this module applies them to real processes:

* every child runs in a process group of its own, so a Ctrl-C in the terminal reaches only
  ``fq up``, which stops the children in order (workers first, NATS last) instead of all of
  them at once;
* a child that logs to the terminal does so through a pipe that ``fq up`` copies line by line
  to its own stderr, keeping the last lines for the crash-loop report; a child with a log file
  writes it itself, and the report reads that file's end;
* only processes started here are ever signalled, by the pids their ``Popen`` holds.

:meth:`Supervisor.check` is called in a loop by ``fq up`` (no threads but the output copiers);
:meth:`Supervisor.stop_all` ends everything, and nothing is restarted after it began.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ferrisqueue.domain.restarts import CrashLoop, RestartHistory, RestartPolicy

log = logging.getLogger("fq.up")

TAIL_LINES = 20
"""Lines of a crash-looping child's output shown when ``fq up`` gives up."""

_TAIL_BYTES = 64 * 1024


def spawn(
    argv: Sequence[str], env: dict[str, str], log_file: Path | None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a process group of its own, its output piped to us (``log_file``
    None) or appended to ``log_file``."""
    out: int | BinaryIO = subprocess.PIPE
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(argv),
            # Unbuffered, so the last lines before a crash reach us before the exit does.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _file_tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


@dataclass
class Child:
    """One supervised process: how to start it, its current process, its restarts."""

    name: str
    launch: Callable[[], subprocess.Popen[bytes]]
    history: RestartHistory
    log_file: Path | None = None
    """Where the child writes its own output; None: it is piped through ``fq up``."""
    stop_last: bool = False
    """Stopped only after every other child has exited (the NATS server the others use)."""
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    """When a pending restart is due (None: running, or never started)."""
    _tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    _copier: threading.Thread | None = None

    def watch(self, process: subprocess.Popen[bytes], now: float, echo: BinaryIO) -> None:
        """Supervise ``process`` from ``now`` on (copying its piped output to ``echo``)."""
        self.process, self.started_at, self.restart_at = process, now, None
        if process.stdout is not None:
            self._copier = threading.Thread(
                target=self._copy, args=(process.stdout, echo), name=f"{self.name}-output"
            )
            self._copier.daemon = True  # a child's grandchild may hold the pipe open
            self._copier.start()
        log.info("started %s (pid %d)", self.name, process.pid)

    def _copy(self, stream: BinaryIO, echo: BinaryIO | None) -> None:
        with stream:
            for line in iter(stream.readline, b""):
                self._tail.append(line.decode("utf-8", errors="replace").rstrip())
                if echo is None:
                    continue
                try:
                    echo.write(line)
                    echo.flush()
                except (OSError, ValueError):
                    # Our terminal is gone (`fq up | head`): go on draining the pipe, or the
                    # child would block on its next log line once the pipe is full.
                    echo = None

    def last_lines(self) -> list[str]:
        """The child's last lines of output (of an exited child, once its pipe is drained)."""
        if self.log_file is not None:
            return _file_tail(self.log_file, TAIL_LINES)
        if self.process is not None and self.process.poll() is not None:
            self.drain(timeout=2.0)
        return list(self._tail)

    def drain(self, *, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until the output of an exited child is copied."""
        if self._copier is not None:
            self._copier.join(timeout=timeout)

    def state(self, now: float) -> str:
        """A few words for the status line."""
        restarts = f", restarts: {self.history.restarts}" if self.history.restarts else ""
        if self.restart_at is not None:
            wait = max(0.0, self.restart_at - now)
            return f"{self.name} down, restarting in {wait:.1f}s{restarts}"
        if self.process is None:
            return f"{self.name} not started"
        up = _duration(now - self.started_at)
        return f"{self.name} up {up} (pid {self.process.pid}{restarts})"


class Supervisor:
    """Restarts children that die, by the :class:`RestartPolicy`, until a crash loop."""

    def __init__(
        self,
        policy: RestartPolicy,
        *,
        echo: BinaryIO,
        status_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``echo``: where piped children's output is copied; ``status_interval``: seconds
        between status lines (0: only when a child exits)."""
        self.policy = policy
        self.children: list[Child] = []
        self._echo = echo
        self._status_interval = status_interval
        self._clock = clock
        self._next_status = float("inf")
        self._stopping = False

    def add(
        self,
        name: str,
        launch: Callable[[], subprocess.Popen[bytes]],
        *,
        log_file: Path | None = None,
        stop_last: bool = False,
        process: subprocess.Popen[bytes] | None = None,
    ) -> Child:
        """Supervise a child: start it now with ``launch``, or watch ``process`` (already
        started); ``launch`` starts it again after it died."""
        child = Child(name, launch, RestartHistory(self.policy), log_file, stop_last)
        self.children.append(child)
        child.watch(process or launch(), self._clock(), self._echo)
        return child

    def check(self) -> tuple[Child, CrashLoop] | None:
        """Notice exits, start due restarts, log the status when due; the child in a crash
        loop, if one is (then nothing more is restarted: stop everything). Does nothing once
        :meth:`stop_all` began: a child being stopped is never restarted."""
        if self._stopping:
            return None
        now = self._clock()
        changed = False
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                child.watch(child.launch(), now, self._echo)
                changed = True
            process = child.process
            if child.restart_at is not None or process is None or process.poll() is None:
                continue
            decision = child.history.exited(started_at=child.started_at, now=now)
            how = f"{child.name} (pid {process.pid}) {describe_exit(process.returncode)}"
            if isinstance(decision, CrashLoop):
                self._report_crash_loop(child, decision, how)
                return child, decision
            child.restart_at = now + decision.delay
            log.warning(
                "%s after %s up; restarting it in %.1fs (restart %d; exits in the last %gs: %d)",
                how,
                _duration(now - child.started_at),
                decision.delay,
                decision.restart,
                self.policy.crash_loop_window,
                decision.recent_exits,
            )
            changed = True
        if changed or now >= self._next_status:
            self.log_status(now)
        return None

    def log_status(self, now: float | None = None) -> None:
        """One line: every child, up (since when, pid) or waiting to restart."""
        now = self._clock() if now is None else now
        log.info("status: %s", "; ".join(child.state(now) for child in self.children))
        if self._status_interval > 0:
            self._next_status = now + self._status_interval

    def _report_crash_loop(self, child: Child, loop: CrashLoop, how: str) -> None:
        where = f" (full log: {child.log_file})" if child.log_file else ""
        lines = "\n".join(f"    | {line}" for line in child.last_lines()) or "    (no output)"
        log.error(
            "%s: %d exits within %gs, a crash loop; stopping everything. Its last log lines%s:\n%s",
            how,
            loop.recent_exits,
            loop.window,
            where,
            lines,
        )

    def stop_all(self, *, timeout: float) -> None:
        """SIGTERM every running child, in reverse start order (workers first), and wait up
        to ``timeout`` seconds before SIGKILL; the ``stop_last`` ones only after the rest
        have exited. Pending restarts are dropped, and nothing is restarted afterwards."""
        self._stopping = True
        for child in self.children:
            child.restart_at = None
        first = [c for c in reversed(self.children) if not c.stop_last]
        last = [c for c in reversed(self.children) if c.stop_last]
        for wave in (first, last):
            _stop(wave, timeout=timeout)
        for child in self.children:  # their last lines reach the terminal before we exit
            child.drain(timeout=1.0)


def _stop(children: list[Child], *, timeout: float) -> None:
    running = [c for c in children if c.process is not None and c.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing pid %d", child.name, child.process.pid)
            child.process.kill()
            child.process.wait()
