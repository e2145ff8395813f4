"""`fq init` imports a deployment's keys (FQ_BOOTSTRAP_*_KEY) on a real nats-server, and a
real gateway (auth on) accepts them; a re-run changes nothing; a placeholder or malformed key
is refused with a clear error before anything is applied."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest

from ferrisqueue.domain.apikeys import new_key
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, settings_for
from tests.support.auth import bearer
from tests.support.procs import FQ, service_env
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return settings_for(tmp_path, nats_server.url, auth="on")


async def fq_init(settings: Settings, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [FQ, "init"],
        env=service_env(settings, **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_fq_init_imports_the_operators_keys_and_the_gateway_accepts_them(
    settings: Settings, tmp_path: Path, start: StartService, nc: object
) -> None:
    (admin_id, admin), (_, dashboard) = new_key(), new_key()
    keys = {"FQ_BOOTSTRAP_ADMIN_KEY": admin, "FQ_BOOTSTRAP_DASHBOARD_KEY": dashboard}

    first = await fq_init(settings, tmp_path, **keys)
    assert first.returncode == 0, first.stderr
    assert f"key admin (id {admin_id}" in first.stdout and "imported" in first.stdout
    assert admin not in first.stdout + first.stderr  # never echoed

    start("gateway")
    async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as gateway:

        async def ready() -> int:
            try:
                return (await gateway.get("/readyz")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, timeout=30, what="gateway /readyz")
        submitted = await gateway.post("/jobs", json={"type": "echo"}, headers=bearer(admin))
        assert submitted.status_code == 202, submitted.text
        read = await gateway.get("/queues", headers=bearer(dashboard))
        assert read.status_code == 200
        written = await gateway.post("/jobs", json={"type": "echo"}, headers=bearer(dashboard))
        assert written.status_code == 403  # the dashboard's key only reads

    again = await fq_init(settings, tmp_path, **keys)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already stored") == 2
    records = await KeyBook(NatsLog(nc)).records()  # type: ignore[arg-type]
    assert sorted((r.name, r.active) for r in records) == [("admin", True), ("dashboard", True)]


@pytest.mark.parametrize(
    "key",
    ["CHANGE-ME-run-fq-keys-generate", "fq_0123456789abcdef_" + "A" * 43, ""],
    ids=["placeholder", "not-random", "empty"],
)
async def test_fq_init_refuses_a_placeholder_or_malformed_key_and_stores_nothing(
    settings: Settings, tmp_path: Path, nc: object, key: str
) -> None:
    refused = await fq_init(settings, tmp_path, FQ_BOOTSTRAP_DASHBOARD_KEY=key)

    assert refused.returncode == 1
    assert "FQ_BOOTSTRAP_DASHBOARD_KEY" in refused.stderr
    assert "fq keys generate" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "topology applied" not in refused.stdout  # refused before anything was done
