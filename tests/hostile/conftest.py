"""Fixtures of the hostile-input tests: the credentials a caller sends the gateway."""

from __future__ import annotations

import pytest


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The headers that authenticate a caller with ``api_key`` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@pytest.fixture
def api_key() -> str | None:
    """The key the hostile-input tests call the gateway with. The gateway has no
    authentication yet, so none; once it has, return a key with every scope here (or turn
    auth off in the gateway's settings) and every test below sends it."""
    return None
