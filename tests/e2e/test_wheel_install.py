"""A plain (non-editable) install of the wheel runs every service, with nothing from the checkout.

The wheel is built as the Dockerfile builds it and installed with its dependencies into a fresh
venv outside the checkout; every process here runs from that venv, in a folder outside the
checkout, without PYTHONPATH. ``fq up`` from the venv then runs nats-server, the projector,
the gateway, the scheduler, a worker and the dashboard (``python -m streamlit_app``), and a
job and a delayed job (the scheduler's timer) complete through the gateway.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferrisqueue.log.embedded import free_port
from tests.support.auth import admin_headers
from tests.support.procs import command_line, descendants
from tests.support.waits import wait_for_readyz, wait_until
from tests.support.wheel import REPO, Venv

# The first test to ask for the venv pays for building the wheel and installing it with its
# dependencies (about 30 s on an idle machine, several times that on a loaded one).
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SERVICES = {"projections", "gateway", "scheduler", "worker", "streamlit_app"}

PROBE = """
import json, sys
import ferrisqueue, gateway, worker, scheduler, projections, streamlit_app
from ferrisqueue.log.topology import definitions, load_stream_definitions
modules = [ferrisqueue, gateway, worker, scheduler, projections, streamlit_app]
print(json.dumps({
    "files": [m.__file__ for m in modules],
    "definitions": str(definitions()),
    "streams": [s["name"] for s in load_stream_definitions()],
    "path": sys.path,
}))
"""


def test_the_venv_imports_every_package_and_the_definitions_from_itself(
    wheel_venv: Venv, tmp_path: Path
) -> None:
    result = subprocess.run(
        [wheel_venv.python, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=wheel_venv.env(),
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    site = str(wheel_venv.root)
    for file in found["files"]:
        assert file.startswith(site), f"{file} is not the venv's"
    assert found["definitions"].startswith(site)
    assert "FQ_EVENTS" in found["streams"]
    checkout = str(REPO)
    assert [p for p in found["path"] if p.startswith(checkout)] == []


@pytest.fixture
def fq_up_from_wheel(
    wheel_venv: Venv, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    env = wheel_venv.env(
        FQ_VAR_DIR=str(tmp_path / "var"),
        FQ_NATS_PORT=str(free_port()),
        FQ_GATEWAY_PORT=str(free_port()),
        FQ_DASHBOARD_PORT=str(free_port()),
        FQ_WORKERS="1",
    )
    log = open(tmp_path / "fq-up.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [wheel_venv.script("fq"), "up"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    yield process, env
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    log.close()


async def test_fq_up_from_the_installed_wheel_runs_a_job_and_a_delayed_job(
    fq_up_from_wheel: tuple[subprocess.Popen[bytes], dict[str, str]],
    wheel_venv: Venv,
    tmp_path: Path,
) -> None:
    process, env = fq_up_from_wheel
    log = tmp_path / "fq-up.log"
    base = f"http://127.0.0.1:{env['FQ_GATEWAY_PORT']}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_for_readyz(
            client, process, lambda: log.read_text(errors="replace"), timeout=90, interval=0.2
        )
        client.headers.update(admin_headers(env["FQ_VAR_DIR"]))  # auth is on, as for a user

        now = await client.post("/jobs", json={"type": "echo", "payload": {"from": "wheel"}})
        later = await client.post(
            "/jobs", json={"type": "echo", "payload": {"from": "timer"}, "delay": 1}
        )
        assert now.status_code == 202, now.text
        assert later.status_code == 202, later.text
        for accepted, payload in ((now, {"from": "wheel"}), (later, {"from": "timer"})):
            status = await wait_until(
                lambda url=accepted.json()["status_url"]: client.get(url),
                lambda r: r.json()["status"] == "completed",
                timeout=30,
                what=f"job {accepted.json()['job_id']} completed",
                interval=0.1,
            )
            assert status.json()["result"] == payload

        dashboard = f"http://127.0.0.1:{env['FQ_DASHBOARD_PORT']}/_stcore/health"

        async def dashboard_health() -> str:
            try:
                return (await client.get(dashboard)).text
            except httpx.TransportError:
                return ""

        await wait_until(
            dashboard_health, lambda t: t == "ok", timeout=60, what="the dashboard", interval=0.2
        )

    # Every service is a `python -m X` of the venv's own interpreter.
    argvs = [command_line(pid) for pid in descendants(process.pid)]
    modules = {argv[2] for argv in argvs if argv[1:2] == ["-m"]}
    assert modules == SERVICES, argvs
    for argv in argvs:
        assert argv[0].startswith(str(wheel_venv.root)), argv

    result = await asyncio.to_thread(
        subprocess.run,
        [wheel_venv.script("fq"), "status", now.json()["job_id"]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text(errors="replace")
