"""The `fq` command against a running system."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from nats.aio.client import Client
from sqlalchemy import text

from ferrisqueue.domain.ids import is_token
from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import SCHEMA_VERSION, make_engine
from tests.conftest import StartService
from tests.support.procs import run_fq

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("via", [[], ["--nats"]], ids=["via-gateway", "via-nats"])
async def test_fq_submit_then_status_wait_shows_completed(
    gateway: httpx.AsyncClient,
    start: StartService,
    settings: Settings,
    tmp_path: Path,
    via: list[str],
) -> None:
    start("worker")

    submitted = await run_fq(settings, tmp_path, "submit", "echo", "-p", '{"a": 1}', *via)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    shown = await run_fq(settings, tmp_path, "status", job_id, "--wait", "15")

    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["status"] == "completed"
    assert status["result"] == {"a": 1}


async def test_fq_init_is_idempotent_and_fq_id_prints_a_token(
    settings: Settings, tmp_path: Path, nats_server: object
) -> None:
    first = await run_fq(settings, tmp_path, "init")
    again = await run_fq(settings, tmp_path, "init")
    new_id = await run_fq(settings, tmp_path, "id")

    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "queues: default" in again.stdout
    assert is_token(new_id.stdout.strip())


async def test_fq_init_creates_the_read_store_schema_and_refuses_another_version(
    settings: Settings, tmp_path: Path, nats_server: object
) -> None:
    created = await run_fq(settings, tmp_path, "init")
    engine = make_engine(settings.effective_database_url)
    with engine.begin() as connection:
        version = connection.execute(
            text("SELECT value FROM schema_info WHERE key = 'version'")
        ).scalar_one()
        connection.execute(text("UPDATE schema_info SET value = 1 WHERE key = 'version'"))
    engine.dispose()
    refused = await run_fq(settings, tmp_path, "init")

    assert created.returncode == 0, created.stderr
    assert "read-store schema ready" in created.stdout
    assert version == SCHEMA_VERSION
    assert refused.returncode == 1
    assert "schema version 1" in refused.stderr


async def test_fq_submit_with_bad_payload_says_why(settings: Settings, tmp_path: Path) -> None:
    result = await run_fq(settings, tmp_path, "submit", "echo", "-p", "{nope")

    assert result.returncode == 2
    assert "--payload is not JSON" in result.stderr


@pytest.mark.timeout(60)
async def test_fq_submit_over_nats_checks_the_contract_and_publishes_nothing_refused(
    settings: Settings, tmp_path: Path, event_log: EventLog, nc: Client
) -> None:
    refused = await run_fq(settings, tmp_path, "submit", "cleanup", "-p", "{}", "--nats")
    both = await run_fq(
        settings, tmp_path, "submit", "echo", "--nats", "--delay", "1", "--run-at", "2030-01-01Z"
    )
    unknown = await run_fq(settings, tmp_path, "submit", "made_up", "-p", '{"x": 1}', "--nats")

    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.replace("│", " ").split())  # typer boxes and wraps it
    assert "payload.older_than_seconds: Field required" in said
    assert both.returncode == 2 and "not both" in both.stderr
    # A type without a contract here may be a plugin's elsewhere: it is published as it is.
    assert unknown.returncode == 0, unknown.stderr
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    assert info.state.messages == 1
