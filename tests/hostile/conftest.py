"""Fixtures of the hostile-input tests: the gateway runs as in production, with
authentication on, and the tests call it with a key holding every scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferrisqueue.domain.principal import ALL_SCOPES
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import settings_for
from tests.support.auth import bearer, make_key


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers that authenticate a caller with ``api_key`` (none without a key)."""
    return bearer(api_key) if api_key else {}


@pytest.fixture
def settings(tmp_path: Path, nats_server: EmbeddedNats) -> Settings:
    """Auth on, as a deployed gateway runs (the shared default turns it off)."""
    return settings_for(tmp_path, nats_server.url, auth="on")


@pytest.fixture
async def api_key(event_log: EventLog) -> str | None:
    """The key the hostile-input tests send: every scope, in the key store of the test's
    NATS. Return None (and set ``auth="off"`` above) to fuzz without authentication."""
    return await make_key(event_log, "hostile-input", *ALL_SCOPES)
