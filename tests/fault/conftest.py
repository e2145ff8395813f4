"""Fixtures of the fault tests: short leases, quick retry hints, a read store to compare with
the log, and a history each test's clients write into (see ``tests/support/history.py``)."""

from __future__ import annotations

import httpx
import pytest

from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.fault.clients import Producer
from tests.support.history import History
from tests.support.procs import ServiceProcess

FAULT_ACK_WAIT = 2.0
"""AckWait of every fault test unless it says otherwise: a lost job comes back quickly."""

FAULT_ENV = {"FQ_RETRY_AFTER_SECONDS": "1", "FQ_PUBLISH_TIMEOUT": "2"}
"""Every service of a fault test: clients are told to retry after 1 s, and a publish without
an ack is given up (as unknown) after 2 s, so faults resolve within a test's time budget."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings, with a short lease (passed to every service as FQ_ACK_WAIT)."""
    return settings.model_copy(update={"ack_wait": FAULT_ACK_WAIT})


@pytest.fixture
def start(start: StartService) -> StartService:
    """The shared ``start``, with :data:`FAULT_ENV` under each service's own variables."""

    def run(module: str, **env: str) -> ServiceProcess:
        return start(module, **{**FAULT_ENV, **env})

    return run


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
def producer(gateway: httpx.AsyncClient, history: History) -> Producer:
    return Producer(gateway, history)
