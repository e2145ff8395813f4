"""`fq up` (what `make up` runs) brings the whole system up; the README's curl smoke check."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from stat import S_IMODE

import httpx
import nats
import nats.aio.client
import nats.errors
import pytest

from ferrisqueue.log.embedded import free_port
from tests.support.auth import admin_headers, bearer
from tests.support.waits import wait_for_readyz, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FQ = str(Path(sys.executable).parent / "fq")


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FQ_")}
    env.update(
        FQ_VAR_DIR=str(tmp_path / "var"),
        FQ_NATS_PORT=str(free_port()),
        FQ_GATEWAY_PORT=str(free_port()),
        FQ_DASHBOARD_PORT=str(free_port()),
        FQ_WORKERS="1",
    )
    env.update(extra)
    return env


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def running_up(
    tmp_path: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """``fq up`` in ``tmp_path`` with ``env``, its output in ``fq-up.log``; stopped (SIGTERM,
    then SIGKILL after 30 s) on leaving."""
    with open(tmp_path / "fq-up.log", "wb") as log:
        process = subprocess.Popen(
            [FQ, "up"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield process, env
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture
def fq_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    with running_up(tmp_path, up_env(tmp_path)) as started:
        yield started


@pytest.mark.timeout(120)
async def test_fq_up_runs_a_curl_posted_job_to_completed_within_2_seconds(
    fq_up: tuple[subprocess.Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    process, env = fq_up
    base = f"http://127.0.0.1:{env['FQ_GATEWAY_PORT']}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_for_readyz(client, process, (tmp_path / "fq-up.log").read_text)
        client.headers.update(admin_headers(env["FQ_VAR_DIR"]))  # auth is on, as by default

        posted = time.monotonic()
        accepted = await client.post("/jobs", json={"type": "echo", "payload": {"hi": 1}})
        assert accepted.status_code == 202
        status = await wait_until(
            lambda: client.get(accepted.json()["status_url"]),
            lambda r: r.json()["status"] == "completed",
            timeout=2.0,
            what="completed within 2 s of the POST",
        )
        assert status.json()["result"] == {"hi": 1}
        assert time.monotonic() - posted < 2.0

        dashboard = f"http://127.0.0.1:{env['FQ_DASHBOARD_PORT']}/_stcore/health"

        async def dashboard_health() -> str:
            try:
                return (await client.get(dashboard)).text
            except httpx.TransportError:
                return ""

        await wait_until(
            dashboard_health, lambda t: t == "ok", timeout=60, what="the dashboard", interval=0.2
        )
        # The dashboard's own key (var/dashboard.key, 0600) reads, and only reads.
        dashboard_key = Path(env["FQ_VAR_DIR"]) / "dashboard.key"
        assert S_IMODE(dashboard_key.stat().st_mode) == 0o600
        reader = bearer(dashboard_key.read_text().strip())
        assert (await client.get("/queues", headers=reader)).status_code == 200
        assert (await client.get("/workers", headers=reader)).status_code == 200
        refused = await client.post("/jobs", json={"type": "echo"}, headers=reader)
        assert refused.status_code == 403

    children = children_of(process.pid)
    # nats-server, projector, gateway, scheduler, worker, dashboard
    assert len(children) == 6, children
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert [pid for pid in children if alive(pid)] == []


def test_fq_up_refuses_a_nats_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env = up_env(tmp_path, FQ_NATS_PORT=str(squatter.getsockname()[1]))

        result = subprocess.run([FQ, "up"], env=env, cwd=tmp_path, capture_output=True, timeout=30)

    assert result.returncode == 2
    assert b"already in use" in result.stderr
    assert b"FQ_NATS_URL" in result.stderr


@pytest.mark.timeout(120)
async def test_fq_up_runs_nats_with_a_user_per_role(
    fq_up: tuple[subprocess.Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    """Acceptance: an anonymous NATS connection cannot publish a submission; the generated
    users are in var/nats-users.json (0600), announced once; the CLI acts as admin."""
    process, env = fq_up
    base = f"http://127.0.0.1:{env['FQ_GATEWAY_PORT']}"
    url = f"nats://127.0.0.1:{env['FQ_NATS_PORT']}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_for_readyz(client, process, (tmp_path / "fq-up.log").read_text)

    anonymous = nats.aio.client.Client()
    try:
        with pytest.raises(nats.errors.Error):
            await anonymous.connect(url, allow_reconnect=False, connect_timeout=2)
    finally:
        await anonymous.close()
    users_file = tmp_path / "var" / "nats-users.json"
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    passwords = json.loads(users_file.read_text())
    assert {
        "admin",
        "operator",
        "gateway",
        "projector",
        "scheduler",
        "producer",
        "worker-default",
    } <= set(passwords)
    assert (tmp_path / "fq-up.log").read_text().count("NATS users created") == 1
    assert passwords["operator"] not in (tmp_path / "var" / "nats" / "nats-server.conf").read_text()

    operator = await nats.connect(
        url, user="operator", password=passwords["operator"], inbox_prefix="_INBOX_operator"
    )
    try:
        info = await operator.jetstream().stream_info("FQ_EVENTS")
        assert info.config.name == "FQ_EVENTS"
    finally:
        await operator.close()
    producer = await nats.connect(
        url, user="producer", password=passwords["producer"], inbox_prefix="_INBOX_producer"
    )
    try:
        job_id = str(uuid.uuid4())
        ack = await producer.jetstream().publish(
            f"fq.job.default.{job_id}.submitted", b'{"type":"echo","payload":{"n":1}}'
        )
        assert ack.stream == "FQ_EVENTS"
    finally:
        await producer.close()
    async with httpx.AsyncClient(
        base_url=base, timeout=5, headers=admin_headers(env["FQ_VAR_DIR"])
    ) as client:

        async def produced() -> dict[str, object]:
            response = await client.get(f"/jobs/{job_id}/status")
            return dict(response.json()) if response.status_code == 200 else {}

        final = await wait_until(
            produced, lambda s: s.get("status") == "completed", timeout=30, what="producer's job"
        )
    assert final["result"] == {"n": 1}
    submitted = await asyncio.to_thread(
        subprocess.run,
        [FQ, "submit", "echo", "--nats"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert submitted.returncode == 0, submitted.stderr
    server_log = (tmp_path / "var" / "nats" / "nats-server.log").read_text()
    assert " Violation - " not in server_log  # every child managed with its own role
