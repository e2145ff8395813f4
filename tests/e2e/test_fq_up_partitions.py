"""`FQ_PROJECTOR_PARTITIONS=2 fq up`: a projector per partition, each connecting as the
projector's NATS user (whose role must allow both partitions' consumers), together applying
every job to the read store."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_fq_up import running_up, up_env
from tests.support.auth import admin_headers
from tests.support.waits import wait_for_readyz, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOBS = 20
PARTITIONS = ("jobs/0of2", "jobs/1of2")


@pytest.fixture
def partitioned_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    env = up_env(tmp_path, FQ_PROJECTOR_PARTITIONS="2", FQ_DASHBOARD="false")
    with running_up(tmp_path, env) as started:
        yield started


@pytest.mark.timeout(120)
async def test_fq_up_runs_a_projector_per_partition(
    partitioned_up: tuple[subprocess.Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    process, env = partitioned_up
    base = f"http://127.0.0.1:{env['FQ_GATEWAY_PORT']}"
    log = (tmp_path / "fq-up.log").read_text
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        await wait_for_readyz(client, process, log)
        client.headers.update(admin_headers(env["FQ_VAR_DIR"]))
        job_ids = []
        for i in range(JOBS):
            accepted = await client.post("/jobs", json={"type": "echo", "payload": {"i": i}})
            assert accepted.status_code == 202, accepted.text
            job_ids.append(accepted.json()["job_id"])

        async def finished() -> int:
            page = await client.get("/jobs", params={"status": "completed", "limit": 100})
            return len({job["job_id"] for job in page.json()["items"]} & set(job_ids))

        await wait_until(finished, lambda n: n == JOBS, timeout=30, what=f"{JOBS} jobs completed")

        async def partitions() -> dict[str, dict[str, object]]:
            return {row["name"]: row for row in (await client.get("/projections")).json()}

        listed = await wait_until(
            partitions,
            lambda rows: all(rows.get(n, {}).get("lag_events") == 0 for n in PARTITIONS),
            timeout=20,
            what="both partitions caught up",
        )
    assert set(listed) == {"jobs/0of2", "jobs/1of2", "workers"}, log()
    assert "projector-0of2" in log() and "projector-1of2" in log()
