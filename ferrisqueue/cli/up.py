"""``fq up``: the whole system on one machine, supervised.

Starts the embedded nats-server (unless ``FQ_NATS_URL`` names one), applies the topology,
then the projector, the gateway, the scheduler, the workers and the dashboard as child
processes (:mod:`ferrisqueue.cli.supervisor`). A child that dies is started again after a
backoff; one that keeps dying (a crash loop, ``FQ_UP_CRASH_LOOP_*``) stops everything and
``fq up`` exits 1, showing that child's last log lines. SIGINT / SIGTERM stop everything
cleanly, workers first so that they can finish their jobs, NATS last. Only processes that
``fq up`` started are ever signalled, by the pids it holds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ferrisqueue.cli.adminkey import ensure_admin_key, ensure_dashboard_key
from ferrisqueue.cli.nats_users import NatsUsers, ensure_users
from ferrisqueue.cli.supervisor import Supervisor, spawn
from ferrisqueue.domain.partition import Partition
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.natsconn import connect_as
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.roles import GATEWAY, PROJECTOR, SCHEDULER, render_authorization, worker_user
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import AuthMode, Settings

log = logging.getLogger("fq.up")


GATEWAY_READY_TIMEOUT = 30.0
"""Seconds the gateway has to answer ``/readyz`` after ``fq up`` started it."""


@dataclass
class Service:
    """One child process of ``fq up``: what to run, with which extra environment, and where
    it logs (None: to ``fq up``'s terminal)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_file: Path | None = None


def services(settings: Settings, nats_url: str) -> list[Service]:
    """What ``fq up`` runs, in start order."""
    python = sys.executable
    base = {"FQ_NATS_URL": nats_url, "FQ_DATABASE_URL": settings.effective_database_url}
    started = [
        *_projectors(settings, base),
        Service("gateway", [python, "-m", "gateway"], base),
        Service("scheduler", [python, "-m", "scheduler"], {**base, **_metrics_port(settings, 1)}),
    ]
    # One NATS user per queue, so a worker process serves one queue: with several queues,
    # FQ_WORKERS processes per queue ("worker-<queue>-<i>").
    queues = settings.worker_queues
    started += [
        Service(
            f"worker-{i}" if len(queues) == 1 else f"worker-{queue}-{i}",
            [python, "-m", "worker"],
            {
                **base,
                "FQ_WORKER_QUEUES": queue,
                "FQ_WORKER_ID": f"{settings.worker_id}-{i}"
                + ("" if len(queues) == 1 else f"-{queue}"),
                **_metrics_port(settings, 1 + n),
            },
        )
        for n, (queue, i) in enumerate(
            ((q, i) for q in queues for i in range(1, settings.workers + 1)), start=1
        )
    ]
    if settings.dashboard:
        started.append(
            Service(
                "dashboard",
                [
                    python,
                    "-m",
                    "streamlit_app",
                    "--server.port",
                    str(settings.dashboard_port),
                    "--server.address",
                    "127.0.0.1",
                    "--server.headless",
                    "true",
                ],
                {**base, "FQ_GATEWAY_URL": str(settings.gateway_url)},
                log_file=settings.var_dir / "logs" / "dashboard.log",
            )
        )
    return started


def _projectors(settings: Settings, base: dict[str, str]) -> list[Service]:
    """The projector, or one per partition of the jobs projection (``FQ_PROJECTOR_PARTITIONS``:
    ``projector-0of2``, ``projector-1of2``...). The first takes the projector's metrics port;
    the others take the ports after the workers'."""
    count = settings.projector_partitions
    if count == 1:
        return [Service("projector", [sys.executable, "-m", "projections"],
                        {**base, **_metrics_port(settings, 0)})]  # fmt: skip
    after_workers = 1 + settings.workers * len(settings.worker_queues)
    return [
        Service(
            f"projector-{partition.label}",
            [sys.executable, "-m", "projections"],
            {
                **base,
                "FQ_PROJECTOR_PARTITIONS": str(count),
                "FQ_PROJECTOR_PARTITION": str(partition.index),
                **_metrics_port(
                    settings, 0 if partition.index == 0 else after_workers + partition.index
                ),
            },
        )
        for partition in Partition(0, count).siblings()
    ]


def _metrics_port(settings: Settings, offset: int) -> dict[str, str]:
    """A child's own metrics port: ``FQ_METRICS_PORT`` is the first of a block (projector,
    scheduler, then the workers in order); unset, no child serves one. The gateway serves
    ``/metrics`` on its HTTP port and ignores the setting."""
    if settings.metrics_port is None:
        return {}
    return {"FQ_METRICS_PORT": str(settings.metrics_port + offset)}


def gateway_ready(url: str) -> bool:
    """Whether the gateway answers ``/readyz`` with 200 right now."""
    try:
        return httpx.get(f"{url}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def nats_identity(service: Service, users: NatsUsers) -> dict[str, str]:
    """The NATS user and password of one child of ``fq up`` (its role's), for its env; the
    dashboard talks to the gateway only and gets none."""
    role = {"projector": PROJECTOR, "gateway": GATEWAY, "scheduler": SCHEDULER}.get(
        service.name.partition("-")[0] if service.name.startswith("projector") else service.name
    )
    if "FQ_WORKER_QUEUES" in service.env:
        role = worker_user(service.env["FQ_WORKER_QUEUES"])
    return users.child_env(role) if role else {}


async def _init_topology(settings: Settings, url: str) -> None:
    nc = await connect_as(settings, name="fq-up", url=url)
    try:
        await ensure_topology(NatsLog(nc), settings)
        await _admin_key(settings, NatsLog(nc))
        await _dashboard_key(settings, NatsLog(nc))
    finally:
        await nc.close()


async def _admin_key(settings: Settings, log_port: NatsLog) -> None:
    """With auth on, the admin key in ``var/admin.key``; printed once, when it is made."""
    if settings.auth is AuthMode.OFF:
        log.warning("FQ_AUTH=off: the gateway accepts every request without a key")
        return
    made = await ensure_admin_key(log_port, settings.admin_key_path)
    if made is not None:
        print(
            f"admin API key (every scope), written to {settings.admin_key_path} (mode 0600); "
            f"it is shown only now:\n{made}\n"
            f'use it as: curl -H "Authorization: Bearer $(cat {settings.admin_key_path})" ...',
            flush=True,
        )


async def _dashboard_key(settings: Settings, log_port: NatsLog) -> None:
    """With auth on and the dashboard started, its own read-scoped key in
    ``var/dashboard.key`` (read there by the dashboard; not printed: nobody types it)."""
    if settings.auth is AuthMode.OFF or not settings.dashboard:
        return
    path = settings.dashboard_key_path
    if await ensure_dashboard_key(log_port, path) is not None:
        log.info("dashboard API key (jobs:read, ops:read) written to %s", path)


def run(settings: Settings) -> int:
    """Run and supervise everything until a signal or a crash loop; the exit code of
    ``fq up``."""
    supervisor = Supervisor(
        settings.restart_policy(),
        echo=sys.stderr.buffer,
        status_interval=settings.up_status_interval,
    )
    embedded = None
    users = None
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.nats_url is None:
            users = ensure_users(settings)
            embedded = EmbeddedNats(
                settings.var_dir.resolve() / "nats",
                settings.nats_port,
                sync_always=settings.nats_sync_always,
                own_process_group=True,
                extra_config=render_authorization(users.roles),
                env=users.server_env(),
            )
            embedded.start()
            log.info("embedded nats-server at %s (data in %s)", embedded.url, embedded.data_dir)
            # If it dies it is started again on the same port and data dir, so the streams
            # come back as they were and the services (which reconnect for ever) go on.
            supervisor.add(
                "nats-server",
                embedded.launch,
                log_file=embedded.log_path,
                stop_last=True,
                process=embedded.process,
            )
        nats_url = settings.effective_nats_url
        admin = settings if users is None else users.as_admin(settings)
        asyncio.run(_init_topology(admin, nats_url))
        if users is not None and users.created:
            print(users.announcement(nats_url), flush=True)
        for service in services(settings, nats_url):
            if users is not None:
                service.env.update(nats_identity(service, users))
            supervisor.add(
                service.name,
                functools.partial(spawn, service.argv, service.env, service.log_file),
                log_file=service.log_file,
            )
        ready_by = time.monotonic() + GATEWAY_READY_TIMEOUT
        announced = False
        while not stopping:
            if supervisor.check() is not None:
                return 1
            if not announced and gateway_ready(str(settings.gateway_url)):
                announced = True
                print(_banner(settings, nats_url), flush=True)
                supervisor.log_status()
            elif not announced and time.monotonic() > ready_by:
                raise ConfigurationError(
                    f"the gateway was not ready at {settings.gateway_url} "
                    f"within {GATEWAY_READY_TIMEOUT:g}s"
                )
            time.sleep(0.1)
        return 0
    finally:
        # Our handlers stay until everything is stopped (a bounded wait): a second SIGTERM or
        # Ctrl-C meanwhile must not kill fq up and leave its children running unowned.
        try:
            supervisor.stop_all(timeout=settings.shutdown_grace + 5)
            if embedded is not None:
                embedded.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _banner(settings: Settings, nats_url: str) -> str:
    dashboard = (
        f", dashboard http://127.0.0.1:{settings.dashboard_port}" if settings.dashboard else ""
    )
    return (
        f"FerrisQueue is up: gateway {settings.gateway_url} (docs at /docs), "
        f"NATS {nats_url}{dashboard}. Ctrl-C stops it."
    )
