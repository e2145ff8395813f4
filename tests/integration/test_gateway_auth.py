"""Gateway authentication on real gateways (two uvicorn replicas) and a real nats-server:
401 without a valid key, 403 without the scope, a revocation refused on every replica at
once, and a rate limit shared by the replicas (429 with Retry-After, a batch counting each
job)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ferrisqueue.cli.adminkey import ensure_admin_key
from ferrisqueue.domain.principal import Scope
from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService, settings_for
from tests.support.auth import bearer, make_key
from tests.support.procs import run_fq
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

JOB = {"type": "echo", "payload": {"hi": 1}}


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return settings_for(tmp_path, nats_server.url, auth="on")


@pytest.fixture
async def gateways(
    start: StartService, event_log: EventLog, settings: Settings
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two gateway replicas (auth on) on one NATS, ready; a client for each."""
    clients = []
    for port in (settings.gateway_port, free_port()):  # the first where `fq` looks for it
        process = start("gateway", FQ_GATEWAY_PORT=str(port))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)

        async def ready(client: httpx.AsyncClient = client, process=process) -> int:  # type: ignore[no-untyped-def]
            assert process.alive(), process.log()
            try:
                return (await client.get("/readyz")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, timeout=30, what="gateway /readyz")
        clients.append(client)
    yield clients
    for client in clients:
        await client.aclose()


async def test_without_a_valid_key_every_route_but_health_answers_401_with_a_bearer_challenge(
    gateways: list[httpx.AsyncClient],
) -> None:
    gateway = gateways[0]
    job_id = "0192f0c8-0000-7000-8000-000000000000"
    refused = {
        "POST /jobs": await gateway.post("/jobs", json=JOB),
        "POST cancel": await gateway.post(f"/jobs/{job_id}/cancel"),
        "POST purge": await gateway.post("/dead-letters/purge", json={"job_ids": [job_id]}),
        "GET status": await gateway.get(f"/jobs/{job_id}/status"),
        "GET schedules": await gateway.get("/schedules"),
        "wrong key": await gateway.get("/jobs", headers=bearer("fq_0123456789abcdef_" + "A" * 43)),
        "not a key": await gateway.get("/jobs", headers=bearer("letmein")),
        "basic": await gateway.get("/jobs", headers={"Authorization": "Basic YTpi"}),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 401)
    assert all(r.headers["WWW-Authenticate"].startswith("Bearer") for r in refused.values())
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await gateway.get(open_path)).status_code == 200, open_path


async def test_a_key_without_the_scope_gets_403_and_with_it_the_request_is_served(
    gateways: list[httpx.AsyncClient], event_log: EventLog
) -> None:
    reader = bearer(await make_key(event_log, "reader", Scope.JOBS_READ))
    writer = bearer(await make_key(event_log, "writer", Scope.JOBS_WRITE, Scope.JOBS_READ))
    gateway = gateways[0]

    forbidden = await gateway.post("/jobs", json=JOB, headers=reader)
    assert forbidden.status_code == 403
    assert "jobs:write" in forbidden.json()["detail"]
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    assert (await gateway.post("/dead-letters/purge", json={}, headers=writer)).status_code == 403
    trigger = await gateway.post("/schedules/nightly/trigger", headers=writer)
    assert trigger.status_code == 403 and "schedules:admin" in trigger.json()["detail"]

    accepted = await gateway.post("/jobs", json=JOB, headers=writer)
    assert accepted.status_code == 202
    status = await gateway.get(accepted.json()["status_url"], headers=reader)
    assert status.status_code in (200, 404)  # 404 until the projector (not running) has it


async def test_a_key_revoked_with_fq_keys_is_refused_by_every_replica(
    gateways: list[httpx.AsyncClient], settings: Settings, tmp_path: Path
) -> None:
    created = await run_fq(settings, tmp_path, "keys", "create", "ci", "--scope", "jobs:read")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("fq_")
    for gateway in gateways:
        assert (await gateway.get("/jobs", headers=bearer(key))).status_code == 200

    listed = await run_fq(settings, tmp_path, "keys", "list")
    assert (
        "ci" in listed.stdout
        and key not in listed.stdout
        and key.split("_", 2)[2] not in listed.stdout  # the secret (base64url: may hold "_")
    )

    revoked = await run_fq(settings, tmp_path, "keys", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    for gateway in gateways:
        await wait_until(
            lambda gateway=gateway: gateway.get("/jobs", headers=bearer(key)),  # type: ignore[misc]
            lambda r: r.status_code == 401,
            timeout=2.0,
            what="the revoked key refused",
        )
    assert "revoked" in (await run_fq(settings, tmp_path, "keys", "list")).stdout


async def test_the_rate_limit_is_shared_by_the_replicas_and_a_batch_counts_each_job(
    gateways: list[httpx.AsyncClient], event_log: EventLog
) -> None:
    # 0.1 job/s: nothing refills during the test; 5 jobs at once.
    key = bearer(await make_key(event_log, "slow", Scope.JOBS_WRITE, rate=0.1, burst=5))
    one, two = gateways

    batch = {"jobs": [JOB, JOB, JOB]}
    assert (await one.post("/jobs:batch", json=batch, headers=key)).status_code == 202
    assert (await two.post("/jobs", json=JOB, headers=key)).status_code == 202
    # One token left over both replicas: a batch of 3 is refused, whole.
    limited = await one.post("/jobs:batch", json=batch, headers=key)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 10  # 2 missing tokens at 0.1/s
    assert (await two.post("/jobs", json=JOB, headers=key)).status_code == 202
    assert (await one.post("/jobs", json=JOB, headers=key)).status_code == 429

    too_big = await two.post("/jobs:batch", json={"jobs": [JOB] * 6}, headers=key)
    assert too_big.status_code == 429 and "split the batch" in too_big.json()["detail"]


async def test_the_openapi_document_declares_the_bearer_scheme_and_each_routes_scope(
    gateways: list[httpx.AsyncClient],
) -> None:
    document = (await gateways[0].get("/openapi.json")).json()
    assert document["components"]["securitySchemes"]["APIKey"]["scheme"] == "bearer"
    assert document["paths"]["/jobs"]["post"]["security"] == [{"APIKey": ["jobs:write"]}]
    assert document["paths"]["/dead-letters/purge"]["post"]["security"] == [
        {"APIKey": ["dlq:admin"]}
    ]
    assert "security" not in document["paths"]["/healthz"]["get"]


async def test_the_fq_cli_sends_the_admin_key_of_var_admin_key(
    gateways: list[httpx.AsyncClient], settings: Settings, event_log: EventLog, tmp_path: Path
) -> None:
    without = await run_fq(settings, tmp_path, "submit", "echo", "-p", "{}")
    assert without.returncode == 1 and "401" in without.stderr

    await ensure_admin_key(event_log, settings.admin_key_path)
    with_key = await run_fq(settings, tmp_path, "submit", "echo", "-p", "{}")
    assert with_key.returncode == 0, with_key.stderr


async def test_concurrent_submissions_on_both_replicas_never_exceed_the_burst(
    gateways: list[httpx.AsyncClient], event_log: EventLog
) -> None:
    key = bearer(await make_key(event_log, "racing", Scope.JOBS_WRITE, rate=0.01, burst=6))

    async def submit(i: int) -> int:
        return (await gateways[i % 2].post("/jobs", json=JOB, headers=key)).status_code

    codes = await asyncio.gather(*(submit(i) for i in range(24)))
    assert sorted(codes) == [202] * 6 + [429] * 18
