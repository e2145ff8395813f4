"""NATS roles on a real nats-server with the rendered ``authorization`` block: what each role
is refused, and that every service works with only its own role."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM
from ferrisqueue.errors import ConfigurationError
from ferrisqueue.log.natsconn import connect
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.roles import inbox_prefix_for
from ferrisqueue.log.topology import (
    ensure_topology,
    prepare_consumer,
    prepare_streams,
    worker_consumer_config,
)
from ferrisqueue.settings import Settings
from tests.conftest import settings_for
from tests.support.procs import ServiceProcess, module_argv, service_env, start_service
from tests.support.secured import QUEUES, SecuredNats, Watched, start_secured
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

SUBMITTED_OTHER = "fq.job.other.{}.submitted"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredNats]:
    server = start_secured(tmp_path / "nats")
    yield server
    server.server.stop()


@pytest.fixture
def settings(tmp_path: Path, secured: SecuredNats) -> Settings:
    return settings_for(tmp_path, secured.url, worker_queues=list(QUEUES))


@pytest.fixture
async def admin(secured: SecuredNats, settings: Settings) -> AsyncIterator[Client]:
    """The admin connection, after it applied the topology (as `fq init` does)."""
    nc = await connect(secured.url, name="test-admin", access=secured.access("admin"))
    await ensure_topology(NatsLog(nc), settings)
    yield nc
    await nc.close()


@pytest.fixture
async def as_role(secured: SecuredNats, admin: Client) -> AsyncIterator[dict[str, Watched]]:
    """A connection per role that a test asked for, closed at the end."""
    opened: dict[str, Watched] = {}
    yield opened
    for watched in opened.values():
        await watched.nc.close()


async def role(secured: SecuredNats, opened: dict[str, Watched], user: str) -> Watched:
    if user not in opened:
        opened[user] = await secured.client(user)
    return opened[user]


async def stored_count(admin: Client, stream: str, subject: str) -> int:
    info = await admin.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


@pytest.mark.parametrize(
    "identity",
    [{}, {"user": "gateway", "password": "guess"}, {"user": "nobody", "password": "x"}],
    ids=["anonymous", "wrong-password", "unknown-user"],
)
async def test_a_connection_without_a_valid_user_is_refused(
    secured: SecuredNats, identity: dict[str, str]
) -> None:
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error):
            await nc.connect(secured.url, allow_reconnect=False, connect_timeout=2, **identity)
    finally:
        await nc.close()
    assert not nc.is_connected


async def test_worker_cannot_submit_for_another_queue_or_its_own(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    worker = await role(secured, as_role, "worker-default")
    other = SUBMITTED_OTHER.format(uuid.uuid4())
    mine = f"fq.job.default.{uuid.uuid4()}.submitted"

    await worker.nc.publish(other, b"{}")
    await worker.refused(other)
    await worker.nc.publish(mine, b"{}")
    await worker.refused(mine)

    assert await stored_count(admin, EVENT_STREAM, "fq.job.*.*.submitted") == 0


async def test_worker_may_write_its_own_queues_outcomes(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    """The positive side of the previous test: the grant is not simply empty."""
    worker = await role(secured, as_role, "worker-default")
    subject = f"fq.job.default.{uuid.uuid4()}.started"

    ack = await worker.nc.jetstream().publish(subject, b"{}")

    assert ack.stream == EVENT_STREAM
    assert await stored_count(admin, EVENT_STREAM, subject) == 1


async def test_worker_cannot_read_the_dead_letters(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    await admin.jetstream().publish("fq.dlq.default.j1", b"secret payload")
    worker = await role(secured, as_role, "worker-default")

    with pytest.raises(nats.errors.TimeoutError):
        await worker.nc.jetstream().get_last_msg(DLQ_STREAM, "fq.dlq.default.j1")
    await worker.refused(f"$JS.API.STREAM.MSG.GET.{DLQ_STREAM}")
    await worker.nc.subscribe("fq.dlq.>")
    await worker.refused("fq.dlq.>")
    await worker.nc.publish(f"$JS.API.CONSUMER.CREATE.{DLQ_STREAM}", b"{}")
    await worker.refused(f"$JS.API.CONSUMER.CREATE.{DLQ_STREAM}")


@pytest.mark.parametrize("verb", ["PURGE", "DELETE", "UPDATE", "CREATE"])
async def test_worker_cannot_purge_delete_or_change_a_stream(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched], verb: str
) -> None:
    await admin.jetstream().publish(f"fq.job.default.{uuid.uuid4()}.submitted", b"{}")
    worker = await role(secured, as_role, "worker-default")
    api = f"$JS.API.STREAM.{verb}.{EVENT_STREAM}"

    await worker.nc.publish(api, b"{}")

    await worker.refused(api)
    info = await admin.jetstream().stream_info(EVENT_STREAM)
    assert info.state.messages == 1


async def test_projector_cannot_publish(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    projector = await role(secured, as_role, "projector")
    subjects = [
        f"fq.job.default.{uuid.uuid4()}.submitted",
        f"fq.job.default.{uuid.uuid4()}.succeeded",
        "fq.dlq.default.x",
        "fq.worker.w.heartbeat",
        "$KV.FQ_CRON.x",
    ]
    for subject in subjects:
        await projector.nc.publish(subject, b"{}")
        await projector.refused(subject)

    assert (await admin.jetstream().stream_info(EVENT_STREAM)).state.messages == 0


async def test_projector_cannot_touch_another_roles_consumer(
    secured: SecuredNats, as_role: dict[str, Watched]
) -> None:
    projector = await role(secured, as_role, "projector")
    for api in (
        f"$JS.API.CONSUMER.DELETE.{EVENT_STREAM}.fq-worker-default",
        f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}.fq-worker-default",
    ):
        await projector.nc.publish(api, b"{}")
        await projector.refused(api)


async def test_operator_views_streams_but_cannot_publish_or_change(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    operator = await role(secured, as_role, "operator")
    js = operator.nc.jetstream()

    info = await js.stream_info(EVENT_STREAM)
    consumer = await js.consumer_info(EVENT_STREAM, "fq-worker-default")

    assert info.config.name == EVENT_STREAM
    assert consumer.name == "fq-worker-default"
    for subject in (
        f"fq.job.default.{uuid.uuid4()}.submitted",
        f"$JS.API.STREAM.PURGE.{EVENT_STREAM}",
        f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}.mine",
    ):
        await operator.nc.publish(subject, b"{}")
        await operator.refused(subject)
    assert (await admin.jetstream().stream_info(EVENT_STREAM)).state.messages == 0


async def test_producer_submits_and_sees_the_jetstream_ack(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    """A JetStream client's publish and a bare request (`nats req`) both get the stream's ack:
    a reply to the producer's own inbox, so no `$JS.API` permission is involved."""
    producer = await role(secured, as_role, "producer")
    job_id = str(uuid.uuid4())
    subject = f"fq.job.default.{job_id}.submitted"
    headers = {"Nats-Msg-Id": f"{job_id}:submitted"}

    ack = await producer.nc.jetstream().publish(subject, b'{"type":"echo"}', headers=headers)
    again = await producer.nc.request(subject, b'{"type":"echo"}', timeout=5, headers=headers)
    later = await producer.nc.jetstream().publish(
        f"fq.job.other.{uuid.uuid4()}.scheduled", b'{"type":"echo","delay":3600}'
    )

    assert ack.stream == EVENT_STREAM and ack.seq == 1
    assert json.loads(again.data) == {"stream": EVENT_STREAM, "seq": 1, "duplicate": True}
    assert later.stream == EVENT_STREAM and later.seq == 2
    assert await stored_count(admin, EVENT_STREAM, subject) == 1
    assert secured.violations() == []


@pytest.mark.parametrize(
    "subject",
    [
        "fq.job.default.{}.started",
        "fq.job.default.{}.succeeded",
        "fq.job.default.{}.redriven",
        "fq.job.default.{}.released",
        "fq.job.default.{}.cancel_requested",
        "fq.dlq.default.{}",
        "fq.worker.{}.heartbeat",
        "$KV.FQ_CRON.{}",
        "$KV.FQ_KEYS.{}",
    ],
)
async def test_producer_cannot_publish_anything_but_a_submission(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched], subject: str
) -> None:
    producer = await role(secured, as_role, "producer")
    target = subject.format(uuid.uuid4())

    await producer.nc.publish(target, b"{}")

    await producer.refused(target)
    for stream in (EVENT_STREAM, DLQ_STREAM, "FQ_WORKERS", "KV_FQ_CRON", "KV_FQ_KEYS"):
        assert (await admin.jetstream().stream_info(stream)).state.messages == 0, stream


async def test_producer_cannot_read_streams_or_kv(
    secured: SecuredNats, admin: Client, as_role: dict[str, Watched]
) -> None:
    job_id = uuid.uuid4()
    await admin.jetstream().publish(f"fq.job.default.{job_id}.submitted", b"{}")
    await admin.jetstream().publish(f"fq.dlq.default.{job_id}", b"secret payload")
    producer = await role(secured, as_role, "producer")
    js = producer.nc.jetstream()

    with pytest.raises(nats.errors.TimeoutError):
        await js.stream_info(EVENT_STREAM)
    await producer.refused(f"$JS.API.STREAM.INFO.{EVENT_STREAM}")
    with pytest.raises(nats.errors.TimeoutError):
        await js.get_last_msg(DLQ_STREAM, f"fq.dlq.default.{job_id}")
    await producer.refused(f"$JS.API.STREAM.MSG.GET.{DLQ_STREAM}")
    with pytest.raises(nats.errors.TimeoutError):
        await js.key_value("FQ_KEYS")
    await producer.refused("$JS.API.STREAM.INFO.KV_FQ_KEYS")
    for watched in ("fq.job.>", "fq.dlq.>", "$KV.FQ_KEYS.>"):
        await producer.nc.subscribe(watched)
        await producer.refused(watched)
    await producer.nc.publish(f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}", b"{}")
    await producer.refused(f"$JS.API.CONSUMER.CREATE.{EVENT_STREAM}")


@pytest.mark.parametrize(
    ("user", "other"),
    [
        ("producer", "admin"),
        ("producer", "gateway"),
        ("worker-default", "worker-other"),
        ("worker-other", "gateway"),
        ("gateway", "admin"),
        ("projector", "scheduler"),
        ("scheduler", "gateway"),
        ("operator", "admin"),
    ],
)
async def test_no_role_can_read_anothers_replies(
    secured: SecuredNats, as_role: dict[str, Watched], user: str, other: str
) -> None:
    client = await role(secured, as_role, user)
    for inbox in (f"{inbox_prefix_for(other)}.>", "_INBOX.>", ">"):
        await client.nc.subscribe(inbox)
        await client.refused(inbox)


async def test_a_runtime_role_only_verifies_the_topology(
    secured: SecuredNats, tmp_path: Path
) -> None:
    """Before `fq init`, a service with a role gets "run fq init", and creates nothing."""
    role_settings = settings_for(
        tmp_path,
        secured.url,
        nats_user="worker-default",
        nats_password=secured.passwords["worker-default"],
    )
    log = await NatsLog.connect(role_settings, name="test-worker")
    try:
        assert not log.creates_topology
        with pytest.raises(ConfigurationError, match="run `fq init`"):
            await prepare_streams(log, role_settings, (EVENT_STREAM,))
    finally:
        await log.close()
    assert secured.violations() == []


async def test_a_role_finds_the_topology_fq_init_made(
    secured: SecuredNats, admin: Client, settings: Settings
) -> None:
    log = await connect(secured.url, name="t", access=secured.access("scheduler"))
    event_log = NatsLog(log, creates_topology=False)
    try:
        await prepare_streams(event_log, settings, (EVENT_STREAM, DLQ_STREAM))
        await prepare_consumer(event_log, EVENT_STREAM, {"durable_name": "fq-scheduler-timers"})
        with pytest.raises(ConfigurationError, match="fq-nope"):
            await prepare_consumer(event_log, EVENT_STREAM, {"durable_name": "fq-nope"})
        dispatch = worker_consumer_config("default", settings)
        await prepare_consumer(event_log, EVENT_STREAM, dispatch)
        longer = worker_consumer_config("default", settings.model_copy(update={"ack_wait": 60.0}))
        with pytest.raises(ConfigurationError, match="ack_wait"):
            await prepare_consumer(event_log, EVENT_STREAM, longer)
    finally:
        await log.close()


# --- every service with only its own role --------------------------------------------------


async def exercise_the_rest_of_the_api(
    http: httpx.AsyncClient, admin: Client, status: Callable[[str], Awaitable[dict[str, object]]]
) -> None:
    """Idempotency keys, cancelling a waiting job, a dead letter, a cron schedule: each
    touches streams and buckets the plain job did not."""
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"type": "echo", "queue": "other"}
    first = await http.post("/jobs", json=body, headers=key)
    again = await http.post("/jobs", json=body, headers=key)
    assert first.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]

    waiting = (await http.post("/jobs", json={**body, "delay": 3600})).json()["job_id"]
    canceled = await http.post(f"/jobs/{waiting}/cancel")
    assert canceled.status_code in (200, 202), canceled.text
    assert canceled.json()["status"] == "canceled"

    doomed = await http.post("/jobs", json={"type": "fail", "queue": "other", "max_attempts": 1})
    doomed_id = doomed.json()["job_id"]

    async def dead_letter() -> int:
        await status(doomed_id)  # fails at once if a service died
        return (await http.get(f"/dead-letters/{doomed_id}")).status_code

    await wait_until(dead_letter, lambda code: code == 200, timeout=30, what="the dead letter")

    async def succeeded_on_other() -> int:
        info = await admin.jetstream().stream_info(
            EVENT_STREAM, subjects_filter="fq.job.other.*.succeeded"
        )
        return len(info.state.subjects or {})

    before = await succeeded_on_other()
    schedule = {"name": "pulse", "schedule": "@every 1s", "job": {"type": "echo", "queue": "other"}}
    created = await http.post("/schedules", json=schedule)
    assert created.status_code == 200, created.text
    await wait_until(
        succeeded_on_other, lambda n: n > before, timeout=30, what="a cron job ran on `other`"
    )
    assert (await http.delete("/schedules/pulse")).status_code in (200, 204)


async def submit_as_producer(secured: SecuredNats) -> str:
    """Submit a job on `other` as a plain-NATS producer (what the README's `nats req` does)."""
    job_id = new_job_id()
    producer = await connect(secured.url, name="test-producer", access=secured.access("producer"))
    try:
        body = json.dumps({"type": "echo", "payload": {"n": 9}}).encode()
        headers = {"Nats-Msg-Id": f"{job_id}:submitted"}
        ack = await producer.jetstream().publish(
            f"fq.job.other.{job_id}.submitted", body, headers=headers
        )
    finally:
        await producer.close()
    assert ack.stream == EVENT_STREAM
    return job_id


def start_as(
    tmp_path: Path, settings: Settings, secured: SecuredNats, module: str, user: str, **env: str
) -> ServiceProcess:
    return start_service(
        f"{module}-{user}",
        module_argv(module),
        service_env(settings, **secured.env(user), **env),
        tmp_path,
    )


async def test_a_job_runs_end_to_end_with_each_service_in_its_own_role(
    secured: SecuredNats, admin: Client, settings: Settings, tmp_path: Path
) -> None:
    services = [
        start_as(tmp_path, settings, secured, "gateway", "gateway"),
        start_as(tmp_path, settings, secured, "projections", "projector"),
        start_as(tmp_path, settings, secured, "scheduler", "scheduler"),
        start_as(tmp_path, settings, secured, "worker", "worker-other", FQ_WORKER_QUEUES="other"),
    ]
    try:
        async with httpx.AsyncClient(base_url=str(settings.gateway_url), timeout=10) as http:

            async def status(job_id: str) -> dict[str, object]:
                dead = [s.name for s in services if not s.alive()]
                assert not dead, "\n".join(s.log() for s in services)
                response = await http.get(f"/jobs/{job_id}/status")
                return dict(response.json()) if response.status_code == 200 else {}

            async def ready() -> int:
                assert all(s.alive() for s in services), "\n".join(s.log() for s in services)
                try:
                    return (await http.get("/readyz")).status_code
                except httpx.TransportError:
                    return 0

            await wait_until(ready, lambda code: code == 200, timeout=30, what="gateway ready")
            accepted = await http.post(
                "/jobs", json={"type": "echo", "queue": "other", "payload": {"n": 7}}
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["job_id"]
            delayed = await http.post(
                "/jobs",
                json={"type": "echo", "queue": "other", "payload": {"n": 8}, "delay": 0.2},
            )
            assert delayed.status_code == 202, delayed.text

            final = await wait_until(
                lambda: status(job_id),
                lambda s: s.get("status") == "completed" and s.get("source") == "read_store",
                timeout=30,
                what="the job completed in the read store",
            )
            later = await wait_until(
                lambda: status(delayed.json()["job_id"]),
                lambda s: s.get("status") == "completed" and s.get("source") == "read_store",
                timeout=30,
                what="the delayed job (a scheduler timer) completed in the read store",
            )
            produced = await submit_as_producer(secured)
            raw = await wait_until(
                lambda: status(produced),
                lambda s: s.get("status") == "completed" and s.get("source") == "read_store",
                timeout=30,
                what="the producer's job completed in the read store",
            )
            await exercise_the_rest_of_the_api(http, admin, status)
    finally:
        for service in services:
            service.terminate()
    assert final["result"] == {"n": 7}
    assert later["result"] == {"n": 8}
    assert raw["result"] == {"n": 9}
    assert secured.violations() == []
    history = await admin.jetstream().stream_info(
        EVENT_STREAM, subjects_filter=f"fq.job.*.{job_id}.*"
    )
    assert set(history.state.subjects or {}) >= {
        f"fq.job.other.{job_id}.submitted",
        f"fq.job.other.{job_id}.succeeded",
    }
