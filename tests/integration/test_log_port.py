"""The log port's contract (tests/support/log_contract.py) on a real nats-server: the same
suite the in-memory log passes in tests/unit/test_log_port.py, so the unit tests built on
the in-memory log stand for what NATS does."""

from __future__ import annotations

import pytest

from ferrisqueue.log.eventlog import EventLog
from tests.support.log_contract import LogContract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class TestNatsLog(LogContract):
    """``log`` is conftest's ``event_log``: a :class:`NatsLog` with the topology applied."""

    @pytest.fixture
    def log(self, event_log: EventLog) -> EventLog:
        return event_log

    async def let_time_pass(self, log: EventLog, seconds: float) -> None:
        """Nothing to do: the next pull waits until the server redelivers."""
