"""Image jobs in a real worker process: end to end, and longer than AckWait without being
delivered twice (the CPU work runs off the event loop, so lease heartbeats keep going)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from PIL import Image

from ferrisqueue.domain.events import Submitted, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

CONSUMER = "fq-worker-default"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage


async def submit_image(event_log: EventLog, payload: dict[str, Any]) -> str:
    job_id = new_job_id()
    await event_log.append(
        Submitted(job_id=job_id, queue="default", at=utcnow(), type="image", payload=payload)
    )
    return job_id


async def events_until_outcome(nc: Client, job_id: str, timeout: float) -> list[dict[str, Any]]:
    """Every event of the job, up to and including its succeeded or failed event."""
    return await collect_events(
        nc,
        f"fq.job.*.{job_id}.*",
        until=lambda b: any(e["event"] in ("succeeded", "failed") for e in b),
        timeout=timeout,
    )


async def test_an_image_job_runs_in_a_worker_and_writes_the_thumbnail(
    start: StartService, nc: Client, event_log: EventLog, root: Path
) -> None:
    Image.new("RGB", (640, 480), "orange").save(root / "photo.png")
    start("worker", FQ_STORAGE_ROOT=str(root))

    job_id = await submit_image(
        event_log,
        {
            "input": "photo.png",
            "operations": [{"op": "thumbnail", "max_width": 160, "max_height": 160}],
            "format": "JPEG",
            "quality": 80,
        },
    )
    events = await events_until_outcome(nc, job_id, timeout=20)

    outcome = events[-1]
    assert outcome["event"] == "succeeded", outcome
    output = f"images/{job_id}.jpg"
    assert outcome["result"] == {
        "output": output,
        "width": 160,
        "height": 120,
        "format": "JPEG",
        "bytes": (root / output).stat().st_size,
    }
    with Image.open(root / output) as written:
        assert (written.format, written.size) == ("JPEG", (160, 120))


async def test_an_image_job_longer_than_ack_wait_is_not_delivered_again(
    start: StartService, nc: Client, event_log: EventLog, root: Path
) -> None:
    # 3000x2000 resampled 32 times with Lanczos: 3-5 s here, several times AckWait.
    Image.linear_gradient("L").resize((3000, 2000)).convert("RGB").save(root / "big.png")
    sizes = [(2999, 1999), (3000, 2000)] * 16
    # Two workers: a redelivery would reach the idle one even if the busy one's loop were stuck.
    for worker in ("w1", "w2"):
        start("worker", FQ_STORAGE_ROOT=str(root), FQ_ACK_WAIT="1", FQ_WORKER_ID=worker)
    js = nc.jetstream()
    await wait_until(  # the worker has applied its 1 s AckWait and is pulling
        lambda: js.consumer_info("FQ_EVENTS", CONSUMER),
        lambda info: info.config.ack_wait == 1.0 and info.num_waiting >= 2,
        timeout=20,
        what="both workers pulling from the consumer with AckWait 1 s",
    )

    job_id = await submit_image(
        event_log,
        {
            "input": "big.png",
            "output": "big-out.png",
            "operations": [
                {"op": "resize", "width": w, "height": h, "keep_aspect": False} for w, h in sizes
            ],
        },
    )
    events = await events_until_outcome(nc, job_id, timeout=45)

    succeeded = [e for e in events if e["event"] == "succeeded"]
    started = [e for e in events if e["event"] == "started"]
    assert len(succeeded) == 1, events
    assert succeeded[0]["duration_ms"] > 2_000, "the job must outlast AckWait to prove anything"
    assert [e["attempt"] for e in started] == [1], "the job was delivered again"
    info = await wait_until(
        lambda: js.consumer_info("FQ_EVENTS", CONSUMER),
        lambda info: info.num_ack_pending == 0,
        timeout=10,
        what="the job's ack",
    )
    assert info.num_redelivered == 0
    assert (root / "big-out.png").is_file()
