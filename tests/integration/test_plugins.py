"""A plugin package installed with pip adds a job type: the gateway lists and validates it,
a worker runs it. The package is ``examples/ferrisqueue-example-plugin`` (``word_count``).
Its worker middleware shows the extension API in a real worker: a resource opened at start
and closed at stop (a journal), a hook on every attempt, and settings of its own
(``FQ_PLUGIN_EXAMPLE_*``) that stop the worker at start when they are invalid.

Why pip and not ``PYTHONPATH``: plugins are found through entry points, which live in the
installed distribution's metadata (``*.dist-info/entry_points.txt``); a source folder on the
path has none. So the test installs the example for real, offline (``--no-index``, no build
isolation, no dependencies), into the test virtualenv, and uninstalls it afterwards unless it
was installed before. Plugins load when a service process starts, so only the processes
started during this module (a few seconds) see it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.subjects import EVENT_STREAM
from tests.conftest import StartService
from tests.support.procs import ServiceProcess
from tests.support.waits import collect_events, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ferrisqueue-example-plugin"
DISTRIBUTION = "ferrisqueue-example-plugin"
BUILTINS = {"email", "image", "cleanup", "data_processing", "report"}


def is_installed() -> bool:
    try:
        distribution(DISTRIBUTION)
    except PackageNotFoundError:
        return False
    return True


def pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example plugin, installed for the module's tests."""
    was_installed = is_installed()
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path_factory.mktemp("plugin") / "ferrisqueue-example-plugin"
    shutil.copytree(
        EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    pip(
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "--force-reinstall",  # idempotent: the same result whether it was installed or not
        str(source),
    )
    try:
        yield
    finally:
        if not was_installed:
            pip("uninstall", "--quiet", "--yes", DISTRIBUTION)


async def test_gateway_lists_the_plugin_type_with_its_schemas(
    example_plugin: None, gateway: httpx.AsyncClient
) -> None:
    response = await gateway.get("/job-types")

    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()}
    assert BUILTINS | {"word_count"} <= set(types)
    word_count = types["word_count"]
    assert "example plugin" in word_count["description"]
    payload = word_count["payload_schema"]
    assert set(payload["properties"]) == {"text", "min_length"}
    assert payload["required"] == ["text"]
    assert payload["properties"]["min_length"]["default"] == 1
    assert payload["additionalProperties"] is False
    assert set(word_count["result_schema"]["properties"]) == {"words", "distinct", "top"}


async def test_gateway_refuses_a_bad_plugin_payload_with_field_errors(
    example_plugin: None, gateway: httpx.AsyncClient, nc: Client
) -> None:
    response = await gateway.post(
        "/jobs", json={"type": "word_count", "payload": {"min_length": 0, "colour": "red"}}
    )

    assert response.status_code == 422
    errors = {tuple(e["loc"]): e["type"] for e in response.json()["detail"]}
    assert errors == {
        ("body", "payload", "text"): "missing",
        ("body", "payload", "min_length"): "greater_than_equal",
        ("body", "payload", "colour"): "extra_forbidden",
    }
    info = await nc.jetstream().stream_info(EVENT_STREAM)
    assert info.state.messages == 0, "a refused job reached the event log"


async def test_worker_runs_the_plugin_job(
    example_plugin: None, gateway: httpx.AsyncClient, start: StartService, nc: Client
) -> None:
    worker = start("worker")
    text = "The cat sat on the mat. THE END, said the cat's owner; a cat."

    response = await gateway.post(
        "/jobs", json={"type": "word_count", "payload": {"text": text, "min_length": 3}}
    )

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    events = await collect_events(
        nc,
        f"fq.job.default.{job_id}.*",
        until=lambda b: any(e["event"] in ("succeeded", "failed") for e in b),
        timeout=20,
    )
    outcome: dict[str, Any] = events[-1]
    assert outcome["event"] == "succeeded", json.dumps(outcome) + worker.log()
    # Words of 3+ letters, case-folded: the x4, cat x2, cat's, sat, mat, end, said, owner.
    assert outcome["result"] == {
        "words": 12,
        "distinct": 8,
        "top": [
            {"word": "the", "count": 4},
            {"word": "cat", "count": 2},
            {"word": "cat's", "count": 1},
            {"word": "end", "count": 1},
            {"word": "mat", "count": 1},
            {"word": "owner", "count": 1},
            {"word": "said", "count": 1},
            {"word": "sat", "count": 1},
        ],
    }
    assert "word_count" in worker.log()  # the worker says which plugins it loaded


@dataclass(frozen=True)
class Journaled:
    """Workers of the example plugin writing their journal to ``path``."""

    path: Path
    start_worker: Callable[..., ServiceProcess]
    """``start_worker(FQ_...="...")``: a worker with the journal and these variables."""


@pytest.fixture
def journaled(example_plugin: None, start: StartService, tmp_path: Path) -> Journaled:
    path = tmp_path / "journal.jsonl"
    return Journaled(
        path, lambda **env: start("worker", FQ_PLUGIN_EXAMPLE_JOURNAL=str(path), **env)
    )


def journal_of(path: Path) -> list[dict[str, Any]]:
    """The example plugin's journal: one JSON object per line."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for_journal(path: Path, job_ids: set[str]) -> list[dict[str, Any]]:
    """The journal, once it has an ``attempt`` line for each of ``job_ids`` (the after-hooks
    run just after the outcome is stored, so the journal may trail the event log a little)."""

    async def read() -> list[dict[str, Any]]:
        return journal_of(path)

    def attempted(lines: list[dict[str, Any]]) -> bool:
        return job_ids <= {line.get("job_id") for line in lines if line["event"] == "attempt"}

    return await wait_until(read, attempted, timeout=20, what=f"journal lines for {job_ids}")


async def wait_for_event(nc: Client, job_id: str, kind: str) -> list[dict[str, Any]]:
    """The job's stored events, once one of them is a ``kind``."""
    return await collect_events(
        nc,
        f"fq.job.default.{job_id}.*",
        until=lambda bodies: any(e["event"] == kind for e in bodies),
        timeout=20,
    )


async def submit(gateway: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await gateway.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def test_plugin_middleware_opens_a_resource_at_start_hooks_every_attempt_and_closes_it(
    journaled: Journaled, gateway: httpx.AsyncClient
) -> None:
    journal, worker = journaled.path, journaled.start_worker()
    counted = await submit(
        gateway, {"type": "word_count", "payload": {"text": "to be or not to be"}}
    )
    # A retryable failure; the retry is a minute away, so only attempt 1 runs here.
    flaky = await submit(
        gateway,
        {
            "type": "flaky",
            "payload": {"failures": 1},
            "max_attempts": 3,
            "retry": {"base": 60, "cap": 60, "jitter": 0},
        },
    )

    await wait_for_journal(journal, {counted, flaky})
    assert worker.terminate() == 0, worker.log()

    lines = journal_of(journal)
    assert lines[0]["event"] == "opened", lines
    assert lines[-1] == {"event": "closed", "worker": lines[0]["worker"]}, lines
    of = {(line["event"], line.get("job_id")): line for line in lines}
    # The handler reached the resource through its context, before the after-hook ran.
    assert of["counted", counted]["words"] == 6
    assert lines.index(of["counted", counted]) < lines.index(of["attempt", counted])
    assert of["attempt", counted] == {
        "event": "attempt",
        "job_id": counted,
        "type": "word_count",
        "attempt": 1,
        "status": "succeeded",
        "will_retry": False,
        "error": None,
    }
    assert of["attempt", flaky] | {"job_id": None} == {
        "event": "attempt",
        "job_id": None,
        "type": "flaky",
        "attempt": 1,
        "status": "failed",
        "will_retry": True,
        "error": "flaky (attempt 1)",
    }


async def test_plugin_hooks_see_a_canceled_attempt_and_one_the_stopping_worker_hands_back(
    journaled: Journaled, gateway: httpx.AsyncClient, nc: Client
) -> None:
    journal, worker = journaled.path, journaled.start_worker(FQ_SHUTDOWN_GRACE="0.5")
    long_job = {"type": "sleep", "payload": {"seconds": 30, "steps": 30}}
    canceled, handed_back = await submit(gateway, long_job), await submit(gateway, long_job)
    for job_id in (canceled, handed_back):  # progress: the handler runs, past its hooks
        await wait_for_event(nc, job_id, "progress")

    assert (await gateway.post(f"/jobs/{canceled}/cancel")).status_code == 202
    await wait_for_journal(journal, {canceled})
    assert worker.terminate() == 0, worker.log()  # past its grace, handed_back is handed back

    lines = journal_of(journal)
    ended = {line["job_id"]: line["status"] for line in lines if line["event"] == "attempt"}
    assert ended == {canceled: "canceled", handed_back: "interrupted"}
    assert lines[-1]["event"] == "closed"


async def test_a_plugin_hook_refuses_a_job_for_good_before_its_handler_runs(
    journaled: Journaled, gateway: httpx.AsyncClient, nc: Client
) -> None:
    journaled.start_worker(FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS="20")
    text = "a text of thirty characters.."

    job_id = await submit(gateway, {"type": "word_count", "payload": {"text": text}})

    events = await wait_for_event(nc, job_id, "dead_lettered")
    (failed,) = [e for e in events if e["event"] == "failed"]
    assert failed["error"] == (
        f"text of {len(text)} characters is over FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS (20)"
    )
    assert failed["error_type"].startswith("permanent:")
    assert "retry_at" not in failed
    lines = await wait_for_journal(journaled.path, {job_id})
    assert [(e["event"], e.get("status")) for e in lines if e.get("job_id") == job_id] == [
        ("attempt", "failed")  # and no "counted": the handler never ran
    ]


async def test_a_worker_with_invalid_plugin_settings_refuses_to_start_naming_the_variable(
    example_plugin: None, start: StartService
) -> None:
    worker = start("worker", FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS="0")

    code = await asyncio.to_thread(worker.process.wait, 30)

    log = worker.log()
    assert code == 2, log
    assert "worker not started: plugin example" in log
    assert "FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS: Input should be greater than or equal to 1" in log
    assert "Traceback" not in log
