"""What every scenario needs: a throw-away system (embedded nats-server on a free port, its own
temp dir and SQLite read store), service processes started by their entry points and
stopped by pid, waits with deadlines, percentiles and peak RSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import nats
from nats.aio.client import Client

from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    """A child process we started (and only ever stop by its pid)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@dataclass
class System:
    """One embedded nats-server, a read store and the services started on them."""

    root: Path
    nats_server: EmbeddedNats
    settings: Settings
    procs: list[Proc] = field(default_factory=list)
    counter: int = 0
    metrics: bool = True
    """Services collect Prometheus metrics (each worker, projector and scheduler on a metrics
    port of its own); off: ``FQ_METRICS_ENABLED=false`` everywhere, the baseline."""
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each started process's metrics port, by its name."""

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service of this system (no FQ_ variable of the caller's)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FQ_")}
        env.update(
            FQ_NATS_URL=self.nats_server.url,
            FQ_DATABASE_URL=self.settings.effective_database_url,
            FQ_VAR_DIR=str(self.settings.var_dir),
            FQ_GATEWAY_HOST="127.0.0.1",
            FQ_GATEWAY_PORT=str(self.settings.gateway_port),
            FQ_LOG_LEVEL="WARNING",
            # No API keys: the benchmarks measure the queue (bench/auth_cost.py measures auth).
            FQ_AUTH="off",
            PYTHONPATH=str(REPO),
        )
        env.update(extra)
        return env

    def spawn(self, module: str, **env: str) -> Proc:
        """Run ``python -m module`` (a FerrisQueue service) with this system's settings."""
        self.counter += 1
        name = f"{module}-{self.counter}"
        if not self.metrics:
            env = {"FQ_METRICS_ENABLED": "false", **env}
        elif module in METRICS_PORTED and "FQ_METRICS_PORT" not in env:
            self.metrics_ports[name] = free_port()
            env = {"FQ_METRICS_PORT": str(self.metrics_ports[name]), **env}
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module],
                env=self.env(**env),
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    async def client(self) -> Client:
        return await nats.connect(self.nats_server.url, name="fq-bench")

    async def topology(self) -> None:
        nc = await self.client()
        try:
            await ensure_topology(NatsLog(nc), self.settings)
        finally:
            await nc.close()

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    async def start_gateway(self, within: float = 30.0) -> Proc:
        """A real uvicorn gateway process, once ``/readyz`` answers 200."""
        proc = self.spawn("gateway")
        async with httpx.AsyncClient(base_url=self.gateway_url, timeout=2) as client:

            async def ready() -> int:
                check_alive(proc)
                try:
                    return (await client.get("/readyz")).status_code
                except httpx.TransportError:
                    return 0

            await wait_until(ready, lambda code: code == 200, within=within, what="gateway")
        return proc


METRICS_PORTED = ("worker", "projections", "scheduler")
"""The services that serve their metrics on a port of their own (the gateway on its own)."""


@contextlib.contextmanager
def system(
    keep: bool = False, *, metrics: bool = True, sync_always: bool = False, **settings: object
) -> Iterator[System]:
    """A fresh system in a temp dir; every process stopped and the dir removed at the end.
    ``metrics``: whether the services collect and serve Prometheus metrics; ``sync_always``:
    the server fsyncs before every ack (``sync_interval: always``)."""
    root = Path(tempfile.mkdtemp(prefix="fq-bench-"))
    server = EmbeddedNats(root / "nats", free_port(), sync_always=sync_always)
    server.start()
    made = System(
        root,
        server,
        Settings(
            _env_file=None,
            nats_url=server.url,
            var_dir=root / "var",
            gateway_port=free_port(),
            nats_sync_always=sync_always,
            # A SQLite read store in the temp dir unless ``settings`` names another.
            **{"database_url": f"sqlite:///{root / 'read.db'}", **settings},  # type: ignore[arg-type]
        ),
        metrics=metrics,
    )
    try:
        yield made
    finally:
        for proc in reversed(made.procs):
            proc.stop()
        server.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def check_alive(proc: Proc) -> None:
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")


async def wait_until(
    check: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Call ``check`` until ``done(result)``; ``TimeoutError`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        last = await check()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def connected(sys_: System) -> AsyncIterator[Client]:
    nc = await sys_.client()
    try:
        yield nc
    finally:
        await nc.close()


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB; psutil's current RSS where /proc
    is missing; None when neither can tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil  # optional; not a dependency of the product
    except ImportError:
        return None
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU the process has used so far (Linux ``/proc``); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default
