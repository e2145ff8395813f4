"""The dashboard's Scheduled, Cron, Queues and Error groups pages in a real browser (Debian's
Chromium through playwright) against real processes: nats-server, gateway, projector,
worker (and the scheduler for cron), and ``python -m streamlit_app``. Each test makes the
thing its page shows happen, then reads it off the page.

``FQ_TEST_SCREENSHOTS=docs`` also writes each page's screenshot there
(``docs/dashboard-<page>.png``, shown in the README).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferrisqueue.domain.events import utcnow
from streamlit_app.display import clock
from tests.conftest import StartService
from tests.e2e.test_dashboard import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FAILURE,
    REPO,
    dashboard,  # noqa: F401 (a fixture)
    run_jobs,
    system,  # noqa: F401 (a fixture)
)
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

WAIT_MS = 30_000


@asynccontextmanager
async def browser_page(url: str) -> AsyncIterator[Any]:
    """A Chromium page open at ``url`` (a dashboard page), closed at the end."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1200})
            await page.goto(url)
            yield page
        finally:
            await browser.close()


async def grid_row(page: Any, text: str) -> list[str]:
    """The cells of the first row of a page's table (``st.dataframe``) that holds ``text``,
    from the grid's accessible DOM table: the cells are drawn on a canvas, and this hidden
    table holds the same text for screen readers."""
    row = page.locator('[data-testid="stDataFrame"] [role="row"]', has_text=text).first
    await row.wait_for(state="attached", timeout=WAIT_MS)
    return [cell.strip() for cell in await row.locator('[role="gridcell"]').all_text_contents()]


async def select_first_row(page: Any, table: int) -> None:
    """Tick the first row of the page's ``table``-th grid (its selection checkbox, drawn on
    the canvas at the row's left end, one row height below the header)."""
    grid = page.locator('[data-testid="stDataFrame"]').nth(table)
    await grid.wait_for(timeout=WAIT_MS)
    box = await grid.bounding_box()
    await page.mouse.click(box["x"] + 14, box["y"] + 35 + 17)


async def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """A screenshot of the page (checked to be an image of something); also into
    ``$FQ_TEST_SCREENSHOTS/dashboard-<name>.png`` when set."""
    shot = tmp_path / f"{name}.png"
    await page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("FQ_TEST_SCREENSHOTS"):
        await page.screenshot(path=REPO / target / f"dashboard-{name}.png", full_page=True)


async def test_scheduled_page_shows_a_delayed_job_with_its_due_time(
    dashboard: str,  # noqa: F811
    system: httpx.AsyncClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    later = await system.post("/jobs", json={"type": "echo", "delay": 3600})
    assert later.status_code == 202, later.text
    job_id = later.json()["job_id"]
    answer = await wait_until(
        lambda: system.get("/jobs/waiting", params={"reason": "scheduled"}),
        lambda r: [j["job_id"] for j in r.json()["items"]] == [job_id],
        timeout=20,
        what="the delayed job in the read store",
    )
    due = clock(answer.json()["items"][0]["run_at"])

    async with browser_page(f"{dashboard}/scheduled") as page:
        await page.get_by_role("heading", name="Scheduled").wait_for(timeout=WAIT_MS)
        cells = await grid_row(page, job_id)
        assert due in cells
        assert any(cell.startswith("in 5") or cell.startswith("in 6") for cell in cells), cells
        await screenshot(page, "scheduled", tmp_path)


async def test_cron_page_shows_a_schedules_next_runs_and_last_outcome(
    dashboard: str,  # noqa: F811
    system: httpx.AsyncClient,  # noqa: F811
    start: StartService,
    tmp_path: Path,
) -> None:
    start("scheduler")
    created = await system.post(
        "/schedules", json={"name": "heartbeat", "schedule": "@every 2s", "job": {"type": "echo"}}
    )
    assert created.status_code in (200, 201), created.text
    await wait_until(
        lambda: system.get("/schedules/heartbeat/jobs"),
        lambda r: bool(r.json()) and r.json()[0]["status"] == "completed",
        timeout=30,
        what="a job of the schedule completed",
    )
    # Pause it, so the next runs and the last job hold still while the page is read.
    paused = await system.post("/schedules/heartbeat/pause")
    assert paused.status_code == 200, paused.text
    await system.post(
        "/schedules",
        json={"name": "nightly-report", "schedule": "0 30 2 * * *", "job": {"type": "echo"}},
    )
    nightly = (await system.get("/schedules/nightly-report")).json()
    last = (await system.get("/schedules/heartbeat/jobs")).json()[0]

    async with browser_page(f"{dashboard}/cron") as page:
        await page.get_by_role("heading", name="Cron").wait_for(timeout=WAIT_MS)
        heartbeat = await grid_row(page, "heartbeat")
        assert "paused" in heartbeat and clock(last["created_at"]) in heartbeat
        outcome = "completed" if last["status"] == "completed" else last["status"]
        assert outcome in heartbeat, heartbeat
        report = await grid_row(page, "nightly-report")
        assert ", ".join(clock(t) for t in nightly["next_fires"]) in report, report
        assert "no job yet" in report
        await screenshot(page, "cron", tmp_path)


async def test_queues_page_shows_throughput_latency_and_job_types(
    dashboard: str,  # noqa: F811
    system: httpx.AsyncClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    await run_jobs(system, echoes=4)
    for _ in range(2):  # delayed: counted in the queue's depth as delayed
        await system.post("/jobs", json={"type": "echo", "delay": 3600})
    await wait_until(
        lambda: system.get("/stats/queues/default"),
        lambda r: r.json()["depth_now"].get("pending:scheduled") == 2,
        timeout=20,
        what="the delayed jobs in the queue's depth",
    )

    async with browser_page(f"{dashboard}/queues") as page:
        delayed = page.locator('[data-testid="stMetric"]', has_text="Jobs delayed now")
        await delayed.wait_for(timeout=WAIT_MS)
        assert (await delayed.locator('[data-testid="stMetricValue"]').inner_text()) == "2"
        # By job type: echo submitted 4 (+2 delayed) and succeeded 4; fail failed once.
        echo = page.locator('[data-testid="stTable"] tbody tr', has_text="echo").first
        await echo.wait_for(timeout=WAIT_MS)
        assert (await echo.inner_text()).split()[:5] == ["echo", "6", "4", "0", "0"]
        fail = await page.locator('[data-testid="stTable"] tbody tr', has_text="fail").inner_text()
        assert fail.split()[:5] == ["fail", "1", "0", "1", "1"]
        await page.locator('[data-testid="stVegaLiteChart"]').nth(3).wait_for(timeout=WAIT_MS)
        await screenshot(page, "queues", tmp_path)


async def test_error_groups_page_counts_a_failed_job_in_its_group(
    dashboard: str,  # noqa: F811
    system: httpx.AsyncClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    ids = await run_jobs(system, echoes=1)
    since = (utcnow() - timedelta(hours=1)).isoformat()
    groups = (await system.get("/errors", params={"since": since})).json()["groups"]
    assert [(g["message"], g["attempts"], g["jobs"]) for g in groups] == [(FAILURE, 1, 1)]
    attempts = (await system.get(f"/errors/{groups[0]['key']}/attempts")).json()["items"]
    assert [a["job_id"] for a in attempts] == ids["fail"]

    async with browser_page(f"{dashboard}/error_groups") as page:
        await page.get_by_role("heading", name="Error groups").wait_for(timeout=WAIT_MS)
        cells = await grid_row(page, FAILURE)
        # error type, message, failed attempts, jobs, failed for good
        assert cells[:5] == [groups[0]["error_type"], FAILURE, "1", "1", "1"], cells
        # Select the group: its jobs are listed, and selecting one opens its job page.
        await select_first_row(page, 0)
        await page.get_by_text("Jobs that failed with").wait_for(timeout=WAIT_MS)
        attempt = await grid_row(page, ids["fail"][0])
        assert attempt[-2:] == ["failed for good", "failed"], attempt
        await screenshot(page, "error-groups", tmp_path)
        await select_first_row(page, 1)
        await page.wait_for_url(f"**/job?job={ids['fail'][0]}", timeout=WAIT_MS)
        await page.get_by_role("heading", name="Attempts").wait_for(timeout=WAIT_MS)


@pytest.mark.parametrize(
    ("path", "title", "shows"),
    [
        ("", "Overview", "Jobs submitted"),
        ("workers", "Workers", "dash-w1"),
        ("errors", "Errors", "Failed jobs"),
        ("jobs", "Jobs", "completed"),
        ("operate", "Operate", "Queues"),
        ("submit", "Submit a job", "Job type"),
    ],
    ids=["overview", "workers", "errors", "jobs", "operate", "submit"],
)
async def test_every_other_page_renders_its_data_without_an_error(
    dashboard: str,  # noqa: F811
    system: httpx.AsyncClient,  # noqa: F811
    tmp_path: Path,
    path: str,
    title: str,
    shows: str,
) -> None:
    await run_jobs(system, echoes=2)

    async with browser_page(f"{dashboard}/{path}") as page:
        await page.get_by_role("heading", name=title).wait_for(timeout=WAIT_MS)
        # Attached, not visible: a table's cells are drawn on a canvas (see grid_row).
        await page.get_by_text(shows).first.wait_for(state="attached", timeout=WAIT_MS)
        assert await page.locator('[data-testid="stException"]').count() == 0
        await screenshot(page, path or "overview", tmp_path)
