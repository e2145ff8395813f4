"""Fixtures that own real processes: a nats-server per test (the pinned binary on a free
loopback port, a fresh data dir) and FerrisQueue's services started by their entry points;
and, once per session, the project's wheel and a fresh venv with it installed."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import ensure_topology
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import init_schema, make_engine
from tests.support.cluster import NatsCluster
from tests.support.procs import ServiceProcess, module_argv, service_env, start_service
from tests.support.stores import BACKENDS, store_url_for
from tests.support.waits import wait_until
from tests.support.wheel import Venv, Wheel, build_wheel, install_into_fresh_venv


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty read store on each backend: the conformance suite runs on both."""
    with store_url_for(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store_engine(store_url: str) -> Iterator[Engine]:
    """An engine on ``store_url`` with the schema in place; disposed after the test."""
    engine = make_engine(store_url)
    init_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(settings: Settings) -> Iterator[Engine]:
    """The read store of the test's ``settings`` (schema created if it is not yet)."""
    engine = make_engine(settings.effective_database_url)
    init_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", free_port())
    server.start()
    yield server
    server.stop()


def settings_for(tmp_path: Path, nats_url: str, **overrides: Any) -> Settings:
    """A test's settings: its own NATS, var folder, SQLite store and gateway port."""
    fields: dict[str, Any] = {
        "nats_url": nats_url,
        "var_dir": tmp_path / "var",
        "database_url": f"sqlite:///{tmp_path / 'read.db'}",
        "gateway_port": free_port(),
        "ack_wait": 5.0,
        "shutdown_grace": 5.0,
        # No API keys: tests of other parts; tests of auth turn it on (tests/support/auth.py).
        "auth": "off",
    }
    return Settings(_env_file=None, **{**fields, **overrides})  # type: ignore[call-arg]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """The 3-node JetStream cluster of docker-compose.yml (its node configs, remapped to free
    loopback ports), stopped by pid at teardown."""
    nodes = NatsCluster(tmp_path / "cluster")
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return settings_for(tmp_path, nats_server.url)


@pytest.fixture
async def nc(nats_server: EmbeddedNats) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


@pytest.fixture
async def event_log(nc: Client, settings: Settings) -> EventLog:
    """The event log of the test's server, with the topology applied (as `fq init` does)."""
    await ensure_topology(NatsLog(nc), settings)
    return NatsLog(nc)


StartService = Callable[..., ServiceProcess]


@pytest.fixture
def start(tmp_path: Path, settings: Settings) -> Iterator[StartService]:
    """``start("worker", FQ_WORKER_ID="w1")`` runs ``python -m worker``; all stopped at teardown."""
    started: list[ServiceProcess] = []
    counter = iter(range(1_000))

    def run(module: str, **env: str) -> ServiceProcess:
        name = f"{module}-{next(counter)}"
        service = start_service(name, module_argv(module), service_env(settings, **env), tmp_path)
        started.append(service)
        return service

    yield run
    for service in reversed(started):
        service.terminate()


@pytest.fixture
async def gateway(start: StartService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A real uvicorn gateway process, ready, and an HTTP client for it."""
    process = start("gateway")
    async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as client:
        await ready_gateway(process, client)
        yield client


async def ready_gateway(process: ServiceProcess, client: httpx.AsyncClient) -> None:
    """Wait until the gateway ``process`` answers ``/readyz`` with 200 on ``client``."""

    async def ready() -> int:
        if not process.alive():
            raise AssertionError(f"gateway died:\n{process.log()}")
        try:
            return (await client.get("/readyz")).status_code
        except httpx.TransportError:
            return 0

    await wait_until(ready, lambda code: code == 200, timeout=20, what="gateway /readyz")


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    """The project's wheel, built once per session as the Dockerfile builds it."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def wheel_venv(built_wheel: Wheel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    """A fresh venv outside the checkout with only the built wheel and its dependencies
    installed (about 600 MB: removed at the end of the session)."""
    root = tmp_path_factory.mktemp("wheel-venv") / "venv"
    venv = install_into_fresh_venv(built_wheel, root)
    yield venv
    shutil.rmtree(root, ignore_errors=True)
