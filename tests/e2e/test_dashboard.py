"""The dashboard shows what the gateway knows: queue lengths, worker health, errors, a job's
timeline, and it submits jobs. Driven two ways against real processes (nats-server, gateway,
projector, worker): Streamlit's ``AppTest`` in-process, and once in a real browser (Debian's
Chromium through playwright) against ``python -m streamlit_app``.

``FQ_TEST_SCREENSHOT=docs/dashboard.png`` makes the browser test also write the README's
screenshot there.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from streamlit.testing.v1 import AppTest

from ferrisqueue.domain.events import Canceled, utcnow
from ferrisqueue.log.embedded import free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.procs import service_env, start_service
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "streamlit_app" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAILURE = "the printer is on fire"


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def system(gateway: httpx.AsyncClient, start: StartService) -> httpx.AsyncClient:
    """Gateway, projector and one worker (heartbeat every 0.5 s) on a fresh nats-server."""
    start("projections")
    start("worker", FQ_WORKER_ID="dash-w1", FQ_WORKER_HEARTBEAT="0.5")
    return gateway


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    """The test's gateway is the one the in-process app reads (Settings reads FQ_ vars); auth
    off like the gateway's (no login: test_dashboard_login.py tests it)."""
    for name in [n for n in os.environ if n.startswith("FQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FQ_GATEWAY_URL", str(settings.gateway_url))
    monkeypatch.setenv("FQ_AUTH", "off")
    return str(settings.gateway_url)


def app_test() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=20)


async def submit(gateway: httpx.AsyncClient, type: str, payload: dict[str, Any]) -> str:
    answer = await gateway.post("/jobs", json={"type": type, "payload": payload})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


async def run_jobs(gateway: httpx.AsyncClient, *, echoes: int = 3) -> dict[str, list[str]]:
    """``echoes`` echo jobs and one failing job, waited on until the read store shows them
    done and the worker's heartbeat is in."""
    ids = {
        "echo": [await submit(gateway, "echo", {"n": n}) for n in range(echoes)],
        "fail": [await submit(gateway, "fail", {"message": FAILURE})],
    }

    async def counts() -> dict[str, int]:
        queues = (await gateway.get("/queues")).json()
        return next((q["counts"] for q in queues if q["queue"] == "default"), {})

    await wait_until(
        counts,
        lambda c: c.get("completed") == echoes and c.get("failed") == 1,
        timeout=20,
        what="the jobs to finish in the read store",
    )
    await wait_until(
        lambda: gateway.get("/workers"),
        lambda r: (
            [(w["worker_id"], w["health"], w["processed"]) for w in r.json()]
            == [("dash-w1", "healthy", echoes + 1)]
        ),
        timeout=20,
        what="the worker's heartbeat counting every job",
    )
    return ids


def frame_with(at: AppTest, column: str) -> Any:
    """The one dataframe on the page that has ``column``."""
    [frame] = [f.value for f in at.dataframe if column in f.value.columns]
    return frame


def rendered(at: AppTest) -> AppTest:
    """Fail with the app's own traceback if the script raised."""
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- AppTest, in-process ------------------------------------------------------------------


async def test_overview_shows_each_queues_job_counts_by_status(
    system: httpx.AsyncClient, dashboard_env: str
) -> None:
    await run_jobs(system, echoes=3)
    for _ in range(2):  # no worker consumes "reports": these wait
        accepted = await system.post("/jobs", json={"type": "echo", "queue": "reports"})
        assert accepted.status_code == 202
    await wait_until(
        lambda: system.get("/queues"),
        lambda r: (
            [(q["queue"], q["counts"]["pending"]) for q in r.json()]
            == [("default", 0), ("reports", 2)]
        ),
        timeout=20,
        what="two pending jobs in the reports queue",
    )

    at = rendered(app_test().run())

    table = at.table[0].value
    columns = ["pending", "running", "completed", "failed", "canceled", "total"]
    assert table.loc["default", columns].tolist() == [0, 0, 3, 1, 0, 4]
    assert table.loc["reports", columns].tolist() == [2, 0, 0, 0, 0, 2]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Queue length (pending)"] == "2"
    assert metrics["Completed"] == "3"
    assert metrics["Jobs submitted"] == "6"  # the reports jobs too
    assert metrics["Attempts finished"] == "4"  # over the last hour: succeeded + failed
    latency = at.table[1].value
    assert latency.loc["run (started → finished)", "p50"].endswith("ms")
    assert latency.loc["wait (queued → started)", "p99"] != "—"
    assert not at.warning  # projections are caught up


async def test_workers_page_lists_the_running_worker_as_healthy(
    system: httpx.AsyncClient, dashboard_env: str
) -> None:
    await run_jobs(system, echoes=1)

    at = rendered(app_test().run())
    at = rendered(at.switch_page("views/workers.py").run())

    workers = frame_with(at, "worker")
    assert workers["worker"].tolist() == ["dash-w1"]
    row = workers.iloc[0]
    assert row["health"] == "healthy"
    assert row["processed"] == 2 and row["failed"] == 1
    assert {m.label: m.value for m in at.metric}["Healthy"] == "1"


async def test_errors_page_lists_a_failed_jobs_error_and_the_dead_letters(
    system: httpx.AsyncClient, nc: Client, dashboard_env: str
) -> None:
    ids = await run_jobs(system, echoes=1)
    poison = str(uuid.uuid4())
    await nc.jetstream().publish(f"fq.job.default.{poison}.submitted", b"[]")
    await wait_until(
        lambda: system.get("/dead-letters"),
        lambda r: len(r.json()["items"]) == 2,
        timeout=20,
        what="the dead letters of the poison message and the permanent failure",
    )

    at = rendered(app_test().run())
    at = rendered(at.switch_page("views/errors.py").run())

    failed, letters = frame_with(at, "last error"), frame_with(at, "reason")
    # A dead-lettered job is failed too: the poison message is listed among the failed jobs.
    assert sorted(failed["job"]) == sorted([*ids["fail"], poison])
    errors = dict(zip(failed["job"], failed["last error"], strict=True))
    assert FAILURE in errors[ids["fail"][0]]
    # A permanent failure is dead-lettered too, beside the poison message.
    assert sorted(letters["job"]) == sorted([*ids["fail"], poison])
    reasons = dict(zip(letters["job"], letters["reason"], strict=True))
    assert "must be a JSON object" in reasons[poison]


async def test_jobs_page_shows_a_jobs_timeline_with_rejected_events_and_their_note(
    system: httpx.AsyncClient, event_log: EventLog, dashboard_env: str
) -> None:
    ids = await run_jobs(system, echoes=1)
    job_id = ids["echo"][0]
    # A cancel arriving after the job completed: stored in the log, rejected by the fold.
    await event_log.append(Canceled(job_id=job_id, queue="default", at=utcnow(), reason="late"))

    at = rendered(app_test().run())
    at = rendered(at.switch_page("views/jobs.py").run())
    assert sorted(frame_with(at, "job")["job"]) == sorted([*ids["echo"], *ids["fail"]])
    at = rendered(at.switch_page("views/job.py").run())
    at.text_input(key="job_id").input(job_id)
    at = rendered(at.run())

    timeline = frame_with(at, "seq")
    assert timeline["event"].tolist() == ["submitted", "started", "succeeded", "canceled"]
    assert timeline["applied"].tolist() == ["✓", "✓", "✓", "✗ rejected"]
    assert timeline["note"].iloc[3] != ""
    assert timeline["status after"].iloc[3] == "completed"
    assert [w.value for w in at.warning] == [
        f"Event #{timeline['seq'].iloc[3]} `canceled` was recorded but not applied: "
        f"{timeline['note'].iloc[3]}"
    ]
    assert {m.label: m.value for m in at.metric}["Status"] == "completed"
    attempts = frame_with(at, "attempt")
    assert attempts[["attempt", "worker", "outcome"]].values.tolist() == [
        [1, "dash-w1", "succeeded"]
    ]
    assert attempts["duration"].iloc[0].endswith("ms")


async def test_submit_form_creates_a_job_the_gateway_knows(
    gateway: httpx.AsyncClient, dashboard_env: str
) -> None:
    at = rendered(app_test().run())
    at = rendered(at.switch_page("views/submit.py").run())

    at.text_input(key="submit_other_type").input("echo")
    at.text_input(key="submit_queue").input("reports")
    at.text_area(key="submit_payload").input('{"n": 7}')
    at.button(key="submit_send").click()
    at = rendered(at.run())

    assert not at.error, [e.value for e in at.error]
    [success] = at.success
    job_id = success.value.split("`")[1]
    status = await gateway.get(f"/jobs/{job_id}/status")
    assert status.status_code == 200
    assert (status.json()["type"], status.json()["queue"]) == ("echo", "reports")


async def test_submit_form_shows_why_the_gateway_refused_a_job(
    gateway: httpx.AsyncClient, dashboard_env: str
) -> None:
    at = rendered(app_test().run())
    at = rendered(at.switch_page("views/submit.py").run())
    assert "email" in at.selectbox(key="submit_known_type").options  # from /job-types

    at.selectbox(key="submit_known_type").select("email")
    at.text_area(key="submit_payload").input('{"to": ["not an address"]}')
    at.button(key="submit_send").click()
    at = rendered(at.run())

    [error] = at.error
    assert error.value.startswith("Refused by the gateway (422): payload.")
    assert not at.success
    assert (await gateway.get("/jobs")).json()["items"] == []


def test_dashboard_says_the_gateway_is_down_instead_of_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [n for n in os.environ if n.startswith("FQ_")]:
        monkeypatch.delenv(name)
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FQ_GATEWAY_URL", down)
    monkeypatch.setenv("FQ_AUTH", "off")

    at = rendered(app_test().run())

    [error] = at.error
    assert f"The gateway at {down} is not reachable" in error.value
    assert not at.table and not at.dataframe


# --- a real browser -------------------------------------------------------------------------


def chromium_or_skip() -> None:
    """Skip where Chromium or playwright is missing; in CI (``CI`` set) that is a failure."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        reason = f"browser test needs {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: the browser test must run in CI")
        pytest.skip(reason)


@pytest.fixture
async def dashboard(
    system: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> AsyncIterator[str]:
    """``python -m streamlit_app`` (the dashboard's entry point) on a free loopback port, ready;
    stopped by pid."""
    chromium_or_skip()
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "streamlit_app",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
    ]
    env = service_env(settings, FQ_GATEWAY_URL=str(settings.gateway_url))
    process = start_service("dashboard", argv, env, tmp_path)
    url = f"http://127.0.0.1:{port}"

    async def health() -> str:
        if not process.alive():
            raise AssertionError(f"the dashboard died:\n{process.log()}")
        try:
            return (await system.get(f"{url}/_stcore/health")).text
        except httpx.TransportError:
            return ""

    try:
        await wait_until(health, lambda text: text == "ok", timeout=30, what="the dashboard")
        yield url
    finally:
        process.terminate()


@pytest.mark.slow
async def test_browser_shows_the_overview_with_queue_counts(
    dashboard: str, system: httpx.AsyncClient, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    await run_jobs(system, echoes=5)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1450})
            await page.goto(dashboard)
            await page.get_by_text("Queue length (pending)").wait_for(timeout=30_000)
            row = page.locator('[data-testid="stTable"] tr', has_text="default").first
            await row.wait_for(timeout=30_000)
            cells = (await row.inner_text()).split()
            # queue, pending, running, completed, failed, canceled, total
            assert cells == ["default", "0", "0", "5", "1", "0", "6"]
            # The whole overview has rendered: the chart and the last section.
            await page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=30_000)
            await page.get_by_role("heading", name="Projections").wait_for(timeout=30_000)
            shot = tmp_path / "overview.png"
            await page.screenshot(path=shot)
            assert shot.stat().st_size > 10_000
            if target := os.environ.get("FQ_TEST_SCREENSHOT"):
                await page.screenshot(path=REPO / target)
        finally:
            await browser.close()
