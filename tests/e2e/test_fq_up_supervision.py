"""`fq up` survives a crashed worker: the worker is restarted, its job comes back as attempt 2,
and the gateway answers throughout; a child in a crash loop stops everything with its last
log lines."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_fq_up import FQ, alive, children_of, up_env
from tests.support.auth import admin_headers
from tests.support.waits import wait_for_readyz, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACK_WAIT = 2.0
"""The lease (FQ_ACK_WAIT): a killed worker's job is delivered again this long after its last
renewal, so the test waits seconds, not the default 30."""


def started_pids(log: Path, name: str) -> list[int]:
    """The pids `fq up` logged for ``name`` ("started worker-1 (pid N)"), in order."""
    pattern = re.compile(rf"started {re.escape(name)} \(pid (\d+)\)")
    return [int(pid) for pid in pattern.findall(log.read_text(errors="replace"))]


class FqUp:
    """One `fq up` process with its combined output in a file."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.env = up_env(tmp_path, FQ_DASHBOARD="false", **env)
        self.log = tmp_path / "fq-up.log"
        self.gateway = f"http://127.0.0.1:{self.env['FQ_GATEWAY_PORT']}"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [FQ, "up"], env=self.env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill_leftovers(self) -> None:
        """SIGKILL children that outlived `fq up` (only when it failed to stop them): pids it
        logged whose command line or environment still names this test's var dir."""
        var = self.env["FQ_VAR_DIR"].encode()
        for pid in map(int, re.findall(r"started \S+ \(pid (\d+)\)", self.output())):
            try:
                proc = Path(f"/proc/{pid}")
                ours = (
                    var in (proc / "cmdline").read_bytes() or var in (proc / "environ").read_bytes()
                )
            except OSError:
                continue
            if ours and alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fq_up(tmp_path: Path) -> Iterator[FqUp]:
    up = FqUp(tmp_path, FQ_ACK_WAIT=str(ACK_WAIT), FQ_WORKERS="1")
    yield up
    up.stop()
    up.kill_leftovers()


async def wait_ready(client: httpx.AsyncClient, up: FqUp) -> None:
    """Until the gateway answers /readyz with 200 (failing at once if `fq up` ended)."""
    await wait_for_readyz(client, up.process, up.output)
    client.headers.update(admin_headers(up.env["FQ_VAR_DIR"]))  # auth is on, as by default


async def completed(client: httpx.AsyncClient, job: dict[str, Any]) -> dict[str, Any]:
    """Until the job is completed: its status."""

    async def status() -> dict[str, Any]:
        answer: dict[str, Any] = (await client.get(job["status_url"])).json()
        return answer

    return await wait_until(
        status, lambda s: s["status"] == "completed", timeout=30, what="completed", interval=0.1
    )


async def poll_health(client: httpx.AsyncClient, stop: asyncio.Event) -> tuple[int, list[str]]:
    """GET /healthz every 50 ms until ``stop``: how many answered, and every failure."""
    answered, failures = 0, []
    while not stop.is_set():
        try:
            response = await client.get("/healthz", timeout=2.0)
            if response.status_code == 200:
                answered += 1
            else:
                failures.append(f"{response.status_code}: {response.text}")
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
        await asyncio.sleep(0.05)
    return answered, failures


@pytest.mark.timeout(120)
async def test_a_worker_sigkilled_mid_job_is_restarted_and_its_job_completes_as_attempt_2(
    fq_up: FqUp,
) -> None:
    async with httpx.AsyncClient(base_url=fq_up.gateway, timeout=5) as client:
        await wait_ready(client, fq_up)
        stop_polling = asyncio.Event()
        poller = asyncio.create_task(poll_health(client, stop_polling))

        accepted = await client.post("/jobs", json={"type": "sleep", "payload": {"seconds": 3}})
        assert accepted.status_code == 202
        job = accepted.json()

        async def status() -> dict[str, Any]:
            answer: dict[str, Any] = (await client.get(job["status_url"])).json()
            return answer

        running = await wait_until(
            status, lambda s: s["status"] == "running", timeout=15, what="attempt 1 running"
        )
        assert running["attempts"] == 1
        [doomed] = started_pids(fq_up.log, "worker-1")
        assert doomed in children_of(fq_up.process.pid)  # only a pid fq up started is killed
        os.kill(doomed, signal.SIGKILL)

        done = await completed(client, job)
        stop_polling.set()
        answered, failures = await poller

        events = (await client.get(f"/jobs/{job['job_id']}/events")).json()

    assert (done["attempts"], done["result"]) == (2, {"slept": 3.0})
    started = [e["body"]["attempt"] for e in events if e["event"] == "started"]
    assert started == [1, 2]
    assert [e["event"] for e in events].count("succeeded") == 1
    assert failures == []
    assert answered >= 20  # it was asked all along: the kill, the restart, attempt 2

    output = fq_up.output()
    assert re.search(
        rf"worker-1 \(pid {doomed}\) was killed by SIGKILL after \S+ up; "
        r"restarting it in 1\.0s \(restart 1; exits in the last 60s: 1\)",
        output,
    ), output
    restarted = started_pids(fq_up.log, "worker-1")
    assert len(restarted) == 2 and restarted[1] != doomed
    assert re.search(r"status: .*worker-1 up \S+ \(pid \d+, restarts: 1\)", output), output
    assert "stopping everything" not in output

    assert fq_up.stop() == 0
    assert fq_up.output().count("restarting it in") == 1  # nothing restarted while stopping
    assert [pid for pid in restarted if alive(pid)] == []


@pytest.mark.timeout(90)
def test_a_child_in_a_crash_loop_stops_everything_and_shows_its_last_log_lines(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-cron.toml"
    up = FqUp(
        tmp_path,
        FQ_WORKERS="1",
        FQ_CRON_FILE=str(missing),  # only the scheduler reads it: only it dies, every time
        FQ_UP_RESTART_BASE="0.1",
        FQ_UP_CRASH_LOOP_EXITS="3",
    )
    try:
        code = up.process.wait(timeout=75)
    finally:
        up.stop()
        up.kill_leftovers()

    output = up.output()
    assert code == 1, output
    pids = started_pids(up.log, "scheduler")
    assert len(pids) == 3, output  # started, then restarted twice
    report = re.search(
        rf"scheduler \(pid {pids[-1]}\) exited with code 1: 3 exits within 60s, a crash loop; "
        r"stopping everything\. Its last log lines:\n((?:    \|.*\n)+)",
        output,
    )
    assert report, output
    assert f"cannot read the cron file {missing}" in report.group(1)
    for name in ("nats-server", "projector", "gateway", "worker-1"):
        assert len(started_pids(up.log, name)) == 1, name  # nobody else was restarted
    everyone = [
        pid for name in ("projector", "gateway", "worker-1") for pid in started_pids(up.log, name)
    ]
    assert [pid for pid in everyone if alive(pid)] == []


@pytest.mark.timeout(120)
async def test_the_embedded_nats_server_killed_is_restarted_on_its_port_with_its_streams(
    fq_up: FqUp,
) -> None:
    async with httpx.AsyncClient(base_url=fq_up.gateway, timeout=5) as client:
        await wait_ready(client, fq_up)
        before = (await client.post("/jobs", json={"type": "echo", "payload": {"n": 1}})).json()
        await completed(client, before)
        [server] = started_pids(fq_up.log, "nats-server")
        assert server in children_of(fq_up.process.pid)

        os.kill(server, signal.SIGKILL)

        async def restarted() -> list[int]:
            assert fq_up.process.poll() is None, fq_up.output()
            return started_pids(fq_up.log, "nats-server")

        await wait_until(restarted, lambda pids: len(pids) == 2, timeout=20, what="a restart")
        await wait_ready(client, fq_up)  # the gateway reconnected

        async def submit() -> httpx.Response:
            return await client.post("/jobs", json={"type": "echo", "payload": {"n": 2}})

        after = await wait_until(
            submit, lambda r: r.status_code == 202, timeout=30, what="a 202 again", interval=0.2
        )
        done = await completed(client, after.json())
        # Read from the log itself: the job stored before the kill is still there.
        trail = (await client.get(f"/jobs/{before['job_id']}/events")).json()

    assert done["result"] == {"n": 2}
    assert [e["event"] for e in trail] == ["submitted", "started", "succeeded"]
    assert re.search(
        rf"nats-server \(pid {server}\) was killed by SIGKILL after \S+ up; restarting it",
        fq_up.output(),
    )
    assert fq_up.stop() == 0


@pytest.mark.timeout(90)
async def test_a_second_sigterm_while_stopping_still_stops_every_child(fq_up: FqUp) -> None:
    async with httpx.AsyncClient(base_url=fq_up.gateway, timeout=5) as client:
        await wait_ready(client, fq_up)
    names = ("nats-server", "projector", "gateway", "scheduler", "worker-1")
    children = [pid for name in names for pid in started_pids(fq_up.log, name)]
    assert len(children) == 5

    fq_up.process.send_signal(signal.SIGTERM)

    async def stopping() -> str:
        return fq_up.output()

    await wait_until(
        stopping,
        lambda out: "stopped" in out.split("Ctrl-C stops it.")[-1],
        timeout=30,
        what="the children stopping",
    )
    fq_up.process.send_signal(signal.SIGTERM)  # an impatient operator, while they stop

    assert fq_up.process.wait(timeout=60) == 0, fq_up.output()
    assert [pid for pid in children if alive(pid)] == []
