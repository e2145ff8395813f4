"""``fq up``: the whole system on one machine, supervised.

Starts the embedded nats-server (unless ``FQ_NATS_URL`` names one), applies the topology,
then the projector, the gateway, the scheduler, the workers and the dashboard as child
processes. If any child dies, everything is stopped and ``fq up`` exits non-zero; SIGINT /
SIGTERM stop everything cleanly, workers first so that they can finish their jobs. Only
processes that ``fq up`` started are ever signalled, by the pids it holds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.natsconn import connect
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings

log = logging.getLogger("fq.up")


@dataclass
class Service:
    """One child process of ``fq up``."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None


def services(settings: Settings, nats_url: str) -> list[Service]:
    """What ``fq up`` runs, in start order."""
    python = sys.executable
    base = {"FQ_NATS_URL": nats_url, "FQ_DATABASE_URL": settings.effective_database_url}
    started = [
        Service("projector", [python, "-m", "projections"], base),
        Service("gateway", [python, "-m", "gateway"], base),
        Service("scheduler", [python, "-m", "scheduler"], base),
    ]
    started += [
        Service(
            f"worker-{i}",
            [python, "-m", "worker"],
            {**base, "FQ_WORKER_ID": f"{settings.worker_id}-{i}"},
        )
        for i in range(1, settings.workers + 1)
    ]
    if settings.dashboard:
        spec = importlib.util.find_spec("streamlit_app")
        if spec is None or spec.origin is None:
            raise ConfigurationError("the streamlit_app package is not installed")
        app = str(Path(spec.origin).parent / "app.py")
        started.append(
            Service(
                "dashboard",
                [
                    python,
                    "-m",
                    "streamlit",
                    "run",
                    app,
                    "--server.port",
                    str(settings.dashboard_port),
                    "--server.address",
                    "127.0.0.1",
                    "--server.headless",
                    "true",
                    "--browser.gatherUsageStats",
                    "false",
                ],
                {**base, "FQ_GATEWAY_URL": str(settings.gateway_url)},
                log_file=settings.var_dir / "logs" / "dashboard.log",
            )
        )
    return started


def start(service: Service) -> None:
    out = None
    if service.log_file is not None:
        service.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(service.log_file, "ab")  # noqa: SIM115 - handed to the child
    service.process = subprocess.Popen(
        service.argv,
        env={**os.environ, **service.env},
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )
    if out is not None:
        out.close()
    log.info("started %s (pid %d)", service.name, service.process.pid)


def stop_all(started: list[Service], *, timeout: float) -> None:
    """SIGTERM in reverse start order (workers before gateway before projector)."""
    for service in reversed(started):
        if service.process and service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service in reversed(started):
        if service.process is None:
            continue
        try:
            service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning(
                "%s did not stop in time; killing pid %d", service.name, service.process.pid
            )
            service.process.kill()
            service.process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until the gateway answers ``/readyz`` with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigurationError(f"the gateway exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ConfigurationError(f"the gateway was not ready at {url} within {timeout}s")


async def _init_topology(settings: Settings, url: str) -> None:
    nc = await connect(url, name="fq-up", connect_timeout=settings.nats_connect_timeout)
    try:
        await ensure_topology(NatsLog(nc), settings)
    finally:
        await nc.close()


def run(settings: Settings) -> int:
    """Run everything until a signal or a child's death; the exit code of ``fq up``."""
    embedded = None
    if settings.nats_url is None:
        embedded = EmbeddedNats(
            settings.var_dir.resolve() / "nats",
            settings.nats_port,
            sync_always=settings.nats_sync_always,
        )
        embedded.start()
        log.info("embedded nats-server at %s (data in %s)", embedded.url, embedded.data_dir)
    nats_url = settings.effective_nats_url
    started: list[Service] = []
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(_init_topology(settings, nats_url))
        for service in services(settings, nats_url):
            start(service)
            started.append(service)
        gateway = next(s for s in started if s.name == "gateway")
        assert gateway.process is not None
        wait_ready(str(settings.gateway_url), gateway.process)
        print(
            f"FerrisQueue is up: gateway {settings.gateway_url} (docs at /docs), "
            f"NATS {nats_url}"
            + (
                f", dashboard http://127.0.0.1:{settings.dashboard_port}"
                if settings.dashboard
                else ""
            )
            + ". Ctrl-C stops it.",
            flush=True,
        )
        while not stopping:
            dead = [s for s in started if s.process and s.process.poll() is not None]
            if dead:
                log.error(
                    "%s exited with %s; stopping everything",
                    dead[0].name,
                    dead[0].process.returncode if dead[0].process else "?",
                )
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_all(started, timeout=settings.shutdown_grace + 5)
        if embedded is not None:
            embedded.stop()
