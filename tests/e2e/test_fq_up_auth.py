"""A fresh `fq up` runs the gateway with auth on: the issue's acceptance, as a new user meets
it (the admin key in var/admin.key, mode 0600, printed once)."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_fq_up import FQ, up_env
from tests.support.auth import admin_headers
from tests.support.waits import wait_for_readyz, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def fresh_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str], Path]]:
    """`fq up` in an empty folder (no dashboard); its output in fq-up.log."""
    env = up_env(tmp_path, FQ_DASHBOARD="false")
    out = tmp_path / "fq-up.log"
    with open(out, "wb") as log:
        process = subprocess.Popen([FQ, "up"], env=env, cwd=tmp_path, stdout=log, stderr=log)
    yield process, env, out
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.timeout(120)
async def test_a_fresh_fq_up_refuses_callers_without_the_admin_key_and_serves_those_with_it(
    fresh_up: tuple[subprocess.Popen[bytes], dict[str, str], Path],
) -> None:
    process, env, out = fresh_up
    base = f"http://127.0.0.1:{env['FQ_GATEWAY_PORT']}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_for_readyz(client, process, out.read_text)
        job_id = "0192f0c8-0000-7000-8000-000000000000"
        anonymous = [
            await client.post("/jobs", json={"type": "echo", "payload": {}}),
            await client.post(f"/jobs/{job_id}/cancel"),
            await client.post("/dead-letters/purge", json={"job_ids": [job_id]}),
            await client.get(f"/jobs/{job_id}/status"),
        ]
        assert [r.status_code for r in anonymous] == [401] * 4
        assert all(r.headers["WWW-Authenticate"].startswith("Bearer") for r in anonymous)

        key_file = Path(env["FQ_VAR_DIR"]) / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert out.read_text().count(key) == 1  # printed once

        client.headers.update(admin_headers(env["FQ_VAR_DIR"]))
        accepted = await client.post("/jobs", json={"type": "echo", "payload": {"a": 1}})
        assert accepted.status_code == 202
        done = await wait_until(
            lambda: client.get(accepted.json()["status_url"]),
            lambda r: r.status_code == 200 and r.json()["status"] == "completed",
            timeout=20,
            what="the job completed",
        )
        assert done.json()["result"] == {"a": 1}
        # The key passes; what follows is each route's own answer.
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 404
        purge = await client.post("/dead-letters/purge", json={"job_ids": [job_id]})
        assert purge.status_code not in (401, 403), purge.text


README = Path(__file__).resolve().parents[2] / "README.md"


async def _readme_quick_start_works_as_printed(env: dict[str, str], *, tmp_path: Path) -> None:
    """The README's smoke-check curls, run by bash in the folder `fq up` ran in (only the
    port and the ``<id>`` placeholder changed)."""
    text = README.read_text()
    block = text[text.index("Smoke check") :]
    block = block[block.index("```sh\n") + 6 : block.index("```", block.index("```sh") + 5)]
    commands = [c for c in block.replace("\\\n", " ").splitlines() if c.startswith("curl")]
    assert len(commands) == 2 and all("$(cat var/admin.key)" in c for c in commands)
    port = env["FQ_GATEWAY_PORT"]

    def run(command: str) -> dict[str, object]:
        result = subprocess.run(
            ["bash", "-c", command.replace("localhost:8000", f"localhost:{port}") + " -sf"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert result.returncode == 0, result.stderr
        answer: dict[str, object] = json.loads(result.stdout)
        return answer

    accepted = await asyncio.to_thread(run, commands[0])
    status_command = commands[1].replace("<id>", str(accepted["job_id"]))
    done = await wait_until(
        lambda: asyncio.to_thread(run, status_command),
        lambda answer: answer["status"] == "completed",
        timeout=10,
        what="the README's job completed",
    )
    assert done["result"] == {"hello": "world"}
