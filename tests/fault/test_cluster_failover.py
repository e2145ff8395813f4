"""A 3-node JetStream cluster (R3 streams) loses nodes under load: the node leading
``FQ_EVENTS`` is SIGKILLed and restarted, then a worker, then two of the three nodes at once.

Every accepted job runs to completion, nothing unknown appears, no 500 is answered, and the
live read store equals a fresh fold of the log: a leader change must not make the projector
skip the events whose deliveries were lost in transit (issue 13: its acknowledgement of a
later event acknowledged them too, and nothing ever applied them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from sqlalchemy import Engine

from ferrisqueue.domain.subjects import EVENT_STREAM
from ferrisqueue.log.natsconn import connect
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.topology import PROJECTOR_CONSUMER, ensure_topology
from ferrisqueue.settings import Settings
from tests.conftest import StartService, settings_for
from tests.fault.clients import Producer
from tests.fault.conftest import FAULT_ACK_WAIT
from tests.fault.system import consuming
from tests.support.cluster import NatsCluster, consumer_leader, stream_leader, stream_whole
from tests.support.history import History, Outcome, verify
from tests.support.procs import ServiceProcess, run_fq
from tests.support.waits import wait_until

pytestmark = [pytest.mark.fault, pytest.mark.slow]

JOBS = 1_200
CLIENTS = 8
"""Concurrent HTTP clients, each submitting its share of the jobs one after another."""
JOB = {"type": "echo", "payload": {}}
CLUSTER_ENV = {"FQ_STREAM_REPLICAS": "3", "FQ_PUBLISH_TIMEOUT": "3", "FQ_MAX_DELIVER": "10"}
"""MaxDeliver 10, not 5: with the fault tests' 2 s AckWait, five deliveries last about 30 s,
and a job delivered while no quorum lets its worker record ``started`` used them up in one
outage and was dead-lettered without ever running (seen here; with the default 30 s AckWait
five deliveries span 15 minutes). Ten span more than five minutes."""


@pytest.fixture
def settings(tmp_path: Path, cluster: NatsCluster) -> Settings:
    """Every service of the test is given all three nodes, as a production deployment is."""
    return settings_for(tmp_path, cluster.url, ack_wait=FAULT_ACK_WAIT, stream_replicas=3)


@pytest.fixture
async def nc(cluster: NatsCluster, settings: Settings) -> AsyncIterator[Client]:
    """The test's own connection: reconnects to a surviving node, and the R3 topology made."""
    await cluster.wait_ready()
    client = await connect(cluster.url, name="fq-test")
    await ensure_topology(NatsLog(client), settings)
    yield client
    await client.close()


@pytest.fixture
def start(start: StartService) -> StartService:
    def run(module: str, **env: str) -> ServiceProcess:
        return start(module, **{**CLUSTER_ENV, **env})

    return run


@pytest.mark.timeout(240)
async def test_losing_nodes_under_load_leaves_the_read_store_equal_to_a_fresh_fold(
    start: StartService,
    cluster: NatsCluster,
    nc: Client,
    settings: Settings,
    gateway: httpx.AsyncClient,
    producer: Producer,
    history: History,
    store: Engine,
    tmp_path: Path,
) -> None:
    services = [start("projections"), start("scheduler")]
    workers = [start("worker", FQ_WORKER_ID=f"w{i}") for i in (1, 2)]
    await consuming(nc, waiting=2)

    async def client(number: int) -> None:
        for n in range(number, JOBS, CLIENTS):
            await producer.submit(f"op-{n}", JOB, retry_for=90)

    producing = asyncio.gather(*(client(i) for i in range(CLIENTS)))

    # 1. The node leading the stream dies under load and comes back once another leads it;
    #    then, three times, the node the projector is connected to, with deliveries in
    #    flight to it (those are the ones issue 13 skipped), or the one leading its consumer.
    kills = [(300, _events_leader)] + [(at, _projector_node) for at in (700, 1_100, 1_500)]
    for at, victim in kills:
        await _log_reaches(nc, at)
        name = await wait_until(lambda f=victim: f(nc, cluster), bool, timeout=10, what="a node")
        assert name is not None
        cluster.node(name).kill()
        history.disrupted(f"{name} SIGKILLed")
        await wait_until(
            lambda: stream_leader(nc, EVENT_STREAM),
            lambda now, gone=name: now not in (None, gone),
            timeout=30,
            what="a stream leader",
        )
        cluster.restart(cluster.node(name))
        await wait_until(
            lambda: stream_whole(nc, EVENT_STREAM), bool, timeout=30, what=f"{name} caught up"
        )

    # 2. A worker dies with jobs in hand; the other one takes them after AckWait.
    await _log_reaches(nc, 1_900)
    workers[0].kill()
    history.worker_gone("w1")

    # 3. Two of three nodes die at once: no quorum, so no write succeeds until they return.
    await _log_reaches(nc, 2_500)
    victims = [node for node in cluster.nodes if node.alive()][:2]
    for node in victims:
        node.kill()
    history.disrupted("two of three nodes SIGKILLed")
    await wait_until(
        lambda: _writes_refused(nc), bool, timeout=30, what="the cluster to refuse writes"
    )
    for node in victims:
        cluster.restart(node)
    await wait_until(
        lambda: stream_whole(nc, EVENT_STREAM), bool, timeout=60, what="the cluster whole again"
    )

    await producing
    verdict = await verify(nc, history, store, timeout=90)
    verified = await run_fq(settings, tmp_path, "projections", "verify")

    if not verdict.ok:  # say why: the services' own account of the faults
        for service in [*services, *workers]:
            print(f"--- {service.name}\n{service.log()[-6000:]}")
    verdict.assert_ok()  # nothing lost or unexpected; store_mismatches = ∅
    assert verdict.outcomes == {"completed": JOBS}
    assert [op for op in history.ops.values() if op.outcome is not Outcome.ACCEPTED] == []
    assert producer.server_errors() == {}, "a 5xx other than 503"
    assert producer.unhelpful_503s == 0, "a 503 without Retry-After"
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 differences" in verified.stdout
    assert all(service.alive() for service in [*services, workers[1]])
    # An election is not a missing stream: nobody is told to run `fq init`.
    assert not [s.name for s in [*services, *workers] if "fq init" in s.log()]


async def _log_reaches(nc: Client, seq: int) -> None:
    async def last() -> int:
        try:
            info = await nc.jetstream().stream_info(EVENT_STREAM)
        except Exception:  # an election in progress: ask again
            return 0
        found: int = info.state.last_seq
        return found

    await wait_until(last, lambda now: now >= seq, timeout=90, what=f"the log at {seq} events")


async def _writes_refused(nc: Client) -> bool:
    """Whether an R3 stream cannot store a message now (no quorum). The probe goes to the
    heartbeat stream, where the projector skips what is not a heartbeat."""
    try:
        await nc.jetstream().publish("fq.worker.probe.heartbeat", b"probe", timeout=1.0)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return True
    return False


async def _events_leader(nc: Client, _cluster: NatsCluster) -> str | None:
    return await stream_leader(nc, EVENT_STREAM)


async def _projector_node(nc: Client, cluster: NatsCluster) -> str | None:
    """The node serving the projector's connection (deliveries in flight to it are cut), or
    the one leading its consumer while ``/connz`` does not show the projector."""
    serving = await cluster.serving("fq-projector")
    return serving.name if serving else await consumer_leader(nc, EVENT_STREAM, PROJECTOR_CONSUMER)
