"""The dashboard's operator actions and the job's page, in a real browser (Debian's Chromium
through playwright) against real processes: nats-server, gateway, projector, one worker and
``python -m streamlit_app``. Each action is clicked and confirmed as an operator would, and
the test asserts on what the gateway then knows (the job canceled, the dead letter redriven
and the job completed, the queue paused...), not on the page's own words only.

``FQ_TEST_SCREENSHOT=docs/dashboard.png`` makes the job page's test also write the README's
screenshot of that page beside it, as ``docs/dashboard-job.png``.
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
from tests.conftest import StartService
from tests.e2e import test_dashboard as base
from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, REPO, submit
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

WAIT_MS = 30_000

# The system (gateway, projector, worker) and `python -m streamlit_app` on it, as there.
system = base.system
dashboard = base.dashboard


@asynccontextmanager
async def browser_page(dashboard: str, path: str = "") -> AsyncIterator[Any]:
    """A Chromium page on ``dashboard``/``path``, its app rendered."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1600})
            await page.goto(f"{dashboard}/{path}")
            await page.get_by_text("Live refresh").wait_for(timeout=WAIT_MS)
            try:
                yield page
            except BaseException:
                # What the page showed, for the failure's report.
                print(await page.locator("body").inner_text())
                raise
        finally:
            await browser.close()


async def confirm(page: Any, key: str) -> None:
    """Click the action button of widget ``key`` and confirm in its dialog."""
    await page.locator(f".st-key-{key}").get_by_role("button").first.click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for(timeout=WAIT_MS)
    await dialog.locator(".st-key-fq_action_confirm button").click()
    await dialog.wait_for(state="detached", timeout=WAIT_MS)


async def rows(page: Any, column: str) -> list[list[str]]:
    """The cells, row by row, of the dataframe that has ``column`` (the grid is drawn on a
    canvas; its cells are also in an accessible table beside it)."""
    grid = page.get_by_test_id("stDataFrame").filter(has=page.locator(f'th:text-is("{column}")'))
    await grid.locator("tbody td").first.wait_for(state="attached", timeout=WAIT_MS)
    return [
        await row.locator("td").all_text_contents() for row in await grid.locator("tbody tr").all()
    ]


async def status_of(gateway: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await gateway.get(f"/jobs/{job_id}/status")).json()
    return answer


async def events_of(gateway: httpx.AsyncClient, job_id: str) -> list[tuple[str, str]]:
    answer = await gateway.get(f"/jobs/{job_id}/events")
    return [(e["event"], e["actor"]) for e in answer.json()]


async def job_with_status(gateway: httpx.AsyncClient, job_id: str, status: str) -> None:
    await wait_until(
        lambda: status_of(gateway, job_id),
        lambda s: s.get("status") == status,
        timeout=20,
        what=f"job {job_id} {status}",
    )


async def dead_letter(gateway: httpx.AsyncClient, type: str, payload: dict[str, Any]) -> str:
    """A job that fails for good at once, dead-lettered (out of its one attempt)."""
    answer = await gateway.post("/jobs", json={"type": type, "payload": payload, "max_attempts": 1})
    job_id: str = answer.json()["job_id"]
    await wait_until(
        lambda: status_of(gateway, job_id),
        lambda s: s.get("dead_lettered") is True and s.get("source") == "read_store",
        timeout=20,
        what=f"job {job_id} dead-lettered in the read store",
    )
    return job_id


async def test_browser_cancel_stops_a_running_job_and_shows_the_event(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    job_id = await submit(system, "sleep", {"seconds": 60})
    await job_with_status(system, job_id, "running")

    async with browser_page(dashboard, f"job?job={job_id}") as page:
        await page.get_by_text("running", exact=True).first.wait_for(timeout=WAIT_MS)
        await confirm(page, "job_cancel")
        # "cancel requested", or "canceled" when the worker was quicker than the answer.
        await page.get_by_text(f"Job {job_id}: cancel").wait_for(timeout=WAIT_MS)
        outcome = page.get_by_test_id("stExpander").filter(has_text="The resulting event")
        await outcome.get_by_text("cancel").first.wait_for(timeout=WAIT_MS)

    await job_with_status(system, job_id, "canceled")
    assert ("cancel_requested", "anonymous") in await events_of(system, job_id)


async def test_browser_job_page_follows_a_running_job_live_without_a_reload(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    job_id = await submit(system, "sleep", {"seconds": 12})
    await job_with_status(system, job_id, "running")

    async with browser_page(dashboard, f"job?job={job_id}") as page:
        status = page.get_by_test_id("stMetricValue").first
        await status.filter(has_text="running").wait_for(timeout=WAIT_MS)
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        # Nothing is clicked: the live refresh (every 5 s by default) shows the end.
        await status.filter(has_text="completed").wait_for(timeout=WAIT_MS)
        assert navigations == []  # no page reload


async def test_browser_run_again_redrives_a_dead_letter_which_then_completes_live(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    job_id = await dead_letter(system, "flaky", {"failures": 1})

    async with browser_page(dashboard, f"job?job={job_id}") as page:
        attempts = page.get_by_test_id("stDataFrame").filter(has_text="attempt").first
        await attempts.wait_for(timeout=WAIT_MS)
        await confirm(page, "job_redrive")
        await page.get_by_text(f"Job {job_id} redriven by anonymous").wait_for(timeout=WAIT_MS)
        # The second attempt succeeds; the page shows it without a reload (live refresh).
        await (
            page.get_by_test_id("stMetricValue")
            .filter(has_text="completed")
            .wait_for(timeout=WAIT_MS)
        )

    assert (await status_of(system, job_id))["status"] == "completed"
    events = await events_of(system, job_id)
    assert ("redriven", "anonymous") in events
    assert [e for e, _ in events].count("started") == 2
    letters = (await system.get("/dead-letters", params={"include_resolved": "true"})).json()
    [letter] = letters["items"]
    assert (letter["resolution"], letter["resolved_by"]) == ("redriven", "anonymous")


async def test_browser_purge_removes_a_dead_letter_for_good(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    job_id = await dead_letter(system, "fail", {"message": "no"})

    async with browser_page(dashboard, f"job?job={job_id}") as page:
        await confirm(page, "job_purge")
        await page.get_by_text(f"Job {job_id} purged by anonymous").wait_for(timeout=WAIT_MS)

    await wait_until(
        lambda: system.get("/dead-letters"),
        lambda r: r.json()["items"] == [],
        timeout=20,
        what="no dead letter left",
    )
    assert (await status_of(system, job_id))["status"] == "failed"
    assert ("purged", "anonymous") in await events_of(system, job_id)


async def test_browser_pauses_and_resumes_a_queue(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    await job_with_status(system, await submit(system, "echo", {}), "completed")

    async def default_queue() -> dict[str, Any]:
        queues = (await system.get("/queues")).json()
        found: dict[str, Any] = next(q for q in queues if q["queue"] == "default")
        return found

    async with browser_page(dashboard, "operate") as page:
        await confirm(page, "operate_queue_pause")
        await page.get_by_text("Queue default is paused (by anonymous).").wait_for(timeout=WAIT_MS)
        paused = await default_queue()
        assert (paused["state"], paused["changed_by"]) == ("paused", "anonymous")
        # A job submitted now waits: the worker starts nothing from a paused queue.
        waiting = await submit(system, "echo", {})

        await confirm(page, "operate_queue_resume")
        await page.get_by_text("Queue default is active (by anonymous).").wait_for(timeout=WAIT_MS)
    assert (await default_queue())["state"] == "active"
    await job_with_status(system, waiting, "completed")


async def test_browser_pauses_resumes_and_triggers_a_cron_schedule(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    defined = await system.post(
        "/schedules",
        json={"name": "hourly", "schedule": "@hourly", "job": {"type": "echo"}},
    )
    assert defined.status_code == 200, defined.text

    async with browser_page(dashboard, "operate") as page:
        await confirm(page, "operate_schedule_pause")
        await page.get_by_text("Schedule hourly is paused (by anonymous).").wait_for(
            timeout=WAIT_MS
        )
        assert (await system.get("/schedules/hourly")).json()["paused"] is True

        await confirm(page, "operate_schedule_trigger")
        ran = page.get_by_text("Schedule hourly ran once now, by anonymous: job ")
        await ran.wait_for(timeout=WAIT_MS)
        job_id = (await ran.inner_text()).rsplit(" ", 1)[-1].rstrip(".")

        await confirm(page, "operate_schedule_resume")
        await page.get_by_text("Schedule hourly is active (by anonymous).").wait_for(
            timeout=WAIT_MS
        )
    assert (await system.get("/schedules/hourly")).json()["paused"] is False
    await job_with_status(system, job_id, "completed")
    assert (await events_of(system, job_id))[0] == ("submitted", "anonymous")


async def test_browser_redrives_every_dead_letter_of_a_type_since_a_time(
    dashboard: str, system: httpx.AsyncClient
) -> None:
    flaky = [await dead_letter(system, "flaky", {"failures": 1}) for _ in range(2)]
    other = await dead_letter(system, "fail", {"message": "stays"})
    since = (utcnow() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M")

    async with browser_page(dashboard, "operate") as page:
        await page.locator(".st-key-operate_dl_type input").fill("flaky")
        await page.locator(".st-key-operate_dl_type input").press("Enter")
        await page.locator(".st-key-operate_dl_since input").fill(since)
        await page.locator(".st-key-operate_dl_since input").press("Enter")
        await page.locator(".st-key-operate_dl_redrive button", has_text="Redrive 2").wait_for(
            timeout=WAIT_MS
        )
        await confirm(page, "operate_dl_redrive")
        await page.get_by_text("2 of 2 dead letters redriven by anonymous.").wait_for(
            timeout=WAIT_MS
        )

    for job_id in flaky:
        await job_with_status(system, job_id, "completed")
    left = (await system.get("/dead-letters")).json()["items"]
    assert [d["job_id"] for d in left] == [other]


async def test_browser_job_page_shows_payload_attempts_and_timeline_with_actors(
    dashboard: str, system: httpx.AsyncClient, start: StartService, tmp_path: Path
) -> None:
    start("scheduler")  # the retry's timer
    answer = await system.post(
        "/jobs",
        json={"type": "flaky", "payload": {"failures": 1, "message": "network blip"},
              "retry": {"base": 0.2, "cap": 0.2}},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    await job_with_status(system, job_id, "completed")

    async with browser_page(dashboard, "jobs") as page:
        # Every table links to the job's page: select the job's row in the Jobs list.
        jobs = page.get_by_test_id("stDataFrame").first
        await jobs.wait_for(timeout=WAIT_MS)
        box = await jobs.bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + 18, box["y"] + 55)  # the first row's checkbox
        await page.wait_for_url(f"**/job?job={job_id}", timeout=WAIT_MS)
        await page.get_by_role("heading", name="Attempts").wait_for(timeout=WAIT_MS)
        await page.get_by_text('"network blip"').first.wait_for(timeout=WAIT_MS)
        attempts = await rows(page, "outcome")
        assert [row[:2] for row in attempts] == [["1", "dash-w1"], ["2", "dash-w1"]]
        assert attempts[0][4].startswith("failed, retry at ")
        assert attempts[0][5].endswith("RuntimeError: network blip (attempt 1)")
        assert attempts[1][4:] == ["succeeded", ""]
        timeline = await rows(page, "actor")
        actors = {row[3]: row[4] for row in timeline}  # event -> actor
        assert actors["submitted"] == "anonymous"
        assert actors["started"] == actors["succeeded"] == "worker:dash-w1"
        assert actors["released"] == "scheduler"  # the retry's timer
        # Relative times, the absolute one on hover.
        created = page.locator("span[title$=' UTC']").first
        assert (await created.inner_text()).endswith("ago")
        # Streamlit's Deploy toolbar is hidden (client.toolbarMode=viewer).
        assert await page.get_by_role("button", name="Deploy").count() == 0
        shot = tmp_path / "job.png"
        await page.screenshot(path=shot, full_page=True)
        assert shot.stat().st_size > 10_000
        if target := os.environ.get("FQ_TEST_SCREENSHOT"):
            await page.screenshot(path=REPO / Path(target).with_name("dashboard-job.png"))
