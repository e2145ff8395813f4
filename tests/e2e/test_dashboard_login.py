"""The dashboard's login, against a real gateway with auth on (real nats-server, projector,
worker): nothing is shown before a login, a wrong key is refused, the admin key logs in, and
the pages read with the dashboard's own read-scoped key. With an ``[auth]`` block (OIDC) the
page offers ``st.login`` instead and shows nothing, and the whole OIDC flow runs in Chromium
against a fake provider on loopback (a real provider is not tested: docs/security.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from ferrisqueue.cli.adminkey import ensure_admin_key, ensure_dashboard_key
from ferrisqueue.domain.apikeys import new_key
from ferrisqueue.domain.principal import Scope
from ferrisqueue.log.embedded import EmbeddedNats, free_port
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.settings import Settings
from tests.conftest import StartService, settings_for
from tests.e2e.test_dashboard import APP, CHROMIUM, CHROMIUM_ARGS, chromium_or_skip, rendered
from tests.e2e.test_dashboard_actions import confirm
from tests.support.auth import bearer, make_key
from tests.support.fake_oidc import fake_oidc_provider
from tests.support.procs import service_env, start_service
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OIDC = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-test-cookie-secret-of-some-length",
    "client_id": "ferrisqueue-dashboard",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    return settings_for(tmp_path, nats_server.url, auth="on")


@pytest.fixture
async def keys(event_log: EventLog, settings: Settings) -> dict[str, str]:
    """The admin key and the dashboard's key, made as `fq up` makes them (var/*.key)."""
    admin = await ensure_admin_key(event_log, settings.admin_key_path)
    dashboard = await ensure_dashboard_key(event_log, settings.dashboard_key_path)
    assert admin and dashboard
    return {"admin": admin, "dashboard": dashboard}


@pytest.fixture
async def system(
    keys: dict[str, str], gateway: httpx.AsyncClient, start: StartService
) -> httpx.AsyncClient:
    """Gateway (auth on), projector and a worker; one echo job done, seen by the read store."""
    start("projections")
    start("worker", FQ_WORKER_ID="login-w1")
    gateway.headers.update(bearer(keys["admin"]))
    accepted = await gateway.post("/jobs", json={"type": "echo", "payload": {}})
    assert accepted.status_code == 202, accepted.text
    await wait_until(
        lambda: gateway.get("/queues"),
        lambda r: [q["counts"].get("completed") for q in r.json()] == [1],
        timeout=20,
        what="the echo job completed in the read store",
    )
    return gateway


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The in-process app: auth on (the default), the test's gateway, and its var dir (where
    var/dashboard.key is)."""
    for name in [n for n in os.environ if n.startswith("FQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FQ_GATEWAY_URL", str(settings.gateway_url))
    monkeypatch.setenv("FQ_VAR_DIR", str(settings.var_dir))


def app_test() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=20)


def shows_no_data(at: AppTest) -> bool:
    return not (at.table or at.dataframe or at.metric) and not at.get("vega_lite_chart")


def log_in(at: AppTest, key: str) -> AppTest:
    at.text_input(key="login_key").input(key)
    at.button(key="login_send").click()
    return rendered(at.run())


# --- AppTest, in-process ------------------------------------------------------------------


async def test_without_a_login_the_dashboard_shows_only_the_login_form(
    system: httpx.AsyncClient, dashboard_env: None
) -> None:
    at = rendered(app_test().run())

    assert at.text_input(key="login_key").label == "API key"
    assert shows_no_data(at)
    assert [t.value for t in at.title] == ["FerrisQueue"]
    # Another page asked for shows the same form: no page runs before a login.
    at = rendered(at.switch_page("views/workers.py").run())
    assert shows_no_data(at) and at.text_input(key="login_key").label == "API key"


async def test_a_wrong_key_is_refused_and_nothing_is_shown(
    system: httpx.AsyncClient, event_log: EventLog, dashboard_env: None
) -> None:
    writer = await make_key(event_log, "writer", Scope.JOBS_WRITE)
    revoked = await make_key(event_log, "gone", Scope.JOBS_READ)
    await KeyBook(event_log).revoke("gone")
    cases = {
        "not a key": ("letmein", "not an API key"),
        "unknown": (new_key()[1], "unknown or revoked"),
        "revoked": (revoked, "unknown or revoked"),
        "no read scope": (writer, "lacks the scope jobs:read"),
    }
    for what, (key, why) in cases.items():
        at = log_in(rendered(app_test().run()), key)
        assert len(at.error) == 1 and why in at.error[0].value, what
        assert shows_no_data(at), what
        assert at.text_input(key="login_key") is not None, what


async def test_the_admin_key_logs_in_and_the_overview_reads_with_the_dashboards_own_key(
    system: httpx.AsyncClient, keys: dict[str, str], event_log: EventLog, dashboard_env: None
) -> None:
    at = log_in(rendered(app_test().run()), keys["admin"])

    assert not at.error, [e.value for e in at.error]
    assert at.table[0].value.loc["default", "completed"] == 1
    assert any("Logged in: key" in c.value for c in at.sidebar.caption)

    # The pages read with the dashboard's key, not the operator's: revoke it and the
    # operator, still logged in with the admin key, sees the gateway refuse the reads.
    await KeyBook(event_log).revoke("dashboard")
    at.button(key="refresh").click()
    at = rendered(at.run())
    assert at.error and all("401" in e.value for e in at.error), [e.value for e in at.error]


async def test_submitting_is_an_operator_action_sent_with_the_operators_key(
    system: httpx.AsyncClient, keys: dict[str, str], dashboard_env: None
) -> None:
    at = log_in(rendered(app_test().run()), keys["admin"])
    at = rendered(at.switch_page("views/submit.py").run())
    at.text_input(key="submit_other_type").input("echo")
    at.button(key="submit_send").click()
    at = rendered(at.run())

    assert not at.error, [e.value for e in at.error]
    [success] = at.success
    job_id = success.value.split("`")[1]
    events = (await system.get(f"/jobs/{job_id}/events")).json()
    assert events[0]["event"] == "submitted"  # accepted: the dashboard key may not write


async def test_with_an_oidc_auth_block_the_page_offers_st_login_and_shows_nothing(
    system: httpx.AsyncClient, dashboard_env: None
) -> None:
    at = app_test()
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": False}
    at = rendered(at.run())

    assert [b.label for b in at.button] == ["Log in"]
    assert not at.text_input  # no key form: the identity provider is the way in
    assert shows_no_data(at)

    # Signed in (Streamlit's cookie, seeded here): the pages show, read with the dashboard key.
    at = app_test()
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": True, "email": "ops@example.com"}
    at = rendered(at.run())
    assert at.table[0].value.loc["default", "completed"] == 1
    assert any("ops@example.com" in c.value for c in at.sidebar.caption)


# --- a real browser -------------------------------------------------------------------------


@asynccontextmanager
async def running_dashboard(
    settings: Settings, tmp_path: Path, probe: httpx.AsyncClient, port: int, *options: str
) -> AsyncIterator[str]:
    """``python -m streamlit_app`` with auth on, reading var/dashboard.key as under `fq up`,
    on ``port``; ready; stopped by pid."""
    argv = [sys.executable, "-m", "streamlit_app", "--server.port", str(port)]
    argv += ["--server.address", "127.0.0.1", *options]
    env = service_env(settings, FQ_GATEWAY_URL=str(settings.gateway_url))
    process = start_service(f"dashboard-{port}", argv, env, tmp_path)
    url = f"http://127.0.0.1:{port}"

    async def health() -> str:
        assert process.alive(), process.log()
        try:
            return (await probe.get(f"{url}/_stcore/health")).text
        except httpx.TransportError:
            return ""

    try:
        await wait_until(health, lambda text: text == "ok", timeout=30, what="the dashboard")
        yield url
    finally:
        process.terminate()


@pytest.fixture
async def dashboard(
    system: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> AsyncIterator[str]:
    chromium_or_skip()
    async with running_dashboard(settings, tmp_path, system, free_port()) as url:
        yield url


@pytest.mark.slow
async def test_browser_login_refuses_a_wrong_key_and_the_admin_key_shows_the_overview(
    dashboard: str, keys: dict[str, str], event_log: EventLog
) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(dashboard)
            key_field = page.locator('input[type="password"]')
            await key_field.wait_for(timeout=30_000)
            assert await page.get_by_text("Queue length (pending)").count() == 0

            await key_field.fill(new_key()[1])
            await page.get_by_role("button", name="Log in").click()
            await page.get_by_text("unknown or revoked").wait_for(timeout=30_000)
            assert await page.locator('[data-testid="stTable"]').count() == 0

            await key_field.fill(keys["admin"])
            await page.get_by_role("button", name="Log in").click()
            row = page.locator('[data-testid="stTable"] tr', has_text="default").first
            await row.wait_for(timeout=30_000)
            assert (await row.inner_text()).split() == ["default", "0", "0", "1", "0", "0", "1"]

            # The dashboard's reads carry its own key: revoked, they are refused (401).
            await KeyBook(event_log).revoke("dashboard")
            await page.get_by_role("button", name="Refresh", exact=True).click()
            await page.get_by_text("401").first.wait_for(timeout=30_000)
        finally:
            await browser.close()


@pytest.mark.slow
async def test_browser_actions_go_with_the_operators_key_and_a_missing_scope_is_a_clear_403(
    dashboard: str, system: httpx.AsyncClient, event_log: EventLog
) -> None:
    from playwright.async_api import async_playwright

    reader = await make_key(event_log, "reader", Scope.JOBS_READ)
    ops = await make_key(event_log, "ops", Scope.JOBS_READ, Scope.QUEUES_ADMIN)

    async def default_queue() -> dict[str, Any]:
        queues = (await system.get("/queues")).json()
        found: dict[str, Any] = next(q for q in queues if q["queue"] == "default")
        return found

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            for key in (reader, ops):
                page = await browser.new_page(viewport={"width": 1280, "height": 1400})
                await page.goto(dashboard)
                await page.locator('input[type="password"]').fill(key)
                await page.get_by_role("button", name="Log in").click()
                # The sidebar's link keeps the session (a URL typed in would log out).
                await page.get_by_role("link", name="Operate").click()
                await confirm(page, "operate_queue_pause")
                if key == reader:
                    refused = page.get_by_text("Not allowed: your API key may not do this.")
                    await refused.wait_for(timeout=30_000)
                    assert "queues:admin" in await refused.inner_text()
                    assert (await default_queue())["state"] == "active"
                else:
                    done = "Queue default is paused (by key:ops)."
                    await page.get_by_text(done).wait_for(timeout=30_000)
            assert (await default_queue())["changed_by"] == "key:ops"
        finally:
            await browser.close()


@pytest.mark.slow
async def test_browser_oidc_login_goes_through_the_identity_provider_and_shows_the_overview(
    system: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    """The whole authorization code flow against a fake provider on loopback: st.login sends
    the browser to its authorize endpoint, the callback exchanges the code for an ID token
    signed with a key made here, Streamlit checks it and sets its cookie, and the overview
    shows, read with the dashboard's key."""
    from playwright.async_api import async_playwright

    chromium_or_skip()
    port = free_port()
    with fake_oidc_provider() as idp:
        secrets_toml = tmp_path / "secrets.toml"
        secrets_toml.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            f'cookie_secret = "{new_key()[1]}"\n'
            f'client_id = "{idp.client_id}"\n'
            f'client_secret = "{idp.client_secret}"\n'
            f'server_metadata_url = "{idp.metadata_url}"\n'
        )
        options = ("--secrets.files", str(secrets_toml))
        async with (
            running_dashboard(settings, tmp_path, system, port, *options) as url,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(url)
                login = page.get_by_role("button", name="Log in")
                await login.wait_for(timeout=30_000)
                assert await page.locator('input[type="password"]').count() == 0
                assert await page.locator('[data-testid="stTable"]').count() == 0

                await login.click()
                row = page.locator('[data-testid="stTable"] tr', has_text="default").first
                await row.wait_for(timeout=30_000)
                assert (await row.inner_text()).split()[:4] == ["default", "0", "0", "1"]
                await page.get_by_text(f"Logged in: {idp.email}").wait_for(timeout=30_000)
            finally:
                await browser.close()
        [asked] = idp.authorize_requests
        assert asked["client_id"] == idp.client_id
        assert asked["redirect_uri"] == f"http://127.0.0.1:{port}/oauth2callback"
        assert asked["response_type"] == "code" and "openid" in asked["scope"].split()
        assert idp.token_requests == 1
