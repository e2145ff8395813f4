"""The `fq` command against a running system."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ferrisqueue.ids import is_token
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.procs import service_env

pytestmark = pytest.mark.integration

FQ = str(Path(sys.executable).parent / "fq")


async def fq(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [FQ, *args],
        env=service_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("via", [[], ["--nats"]], ids=["via-gateway", "via-nats"])
async def test_fq_submit_then_status_wait_shows_completed(
    gateway: httpx.AsyncClient,
    start: StartService,
    settings: Settings,
    tmp_path: Path,
    via: list[str],
) -> None:
    start("worker")

    submitted = await fq(settings, tmp_path, "submit", "echo", "-p", '{"a": 1}', *via)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    shown = await fq(settings, tmp_path, "status", job_id, "--wait", "15")

    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["status"] == "completed"
    assert status["result"] == {"a": 1}


async def test_fq_init_is_idempotent_and_fq_id_prints_a_token(
    settings: Settings, tmp_path: Path, nats_server: object
) -> None:
    first = await fq(settings, tmp_path, "init")
    again = await fq(settings, tmp_path, "init")
    new_id = await fq(settings, tmp_path, "id")

    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "queues: default" in again.stdout
    assert is_token(new_id.stdout.strip())


async def test_fq_submit_with_bad_payload_says_why(settings: Settings, tmp_path: Path) -> None:
    result = await fq(settings, tmp_path, "submit", "echo", "-p", "{nope")

    assert result.returncode == 2
    assert "--payload is not JSON" in result.stderr
