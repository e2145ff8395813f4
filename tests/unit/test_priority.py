"""Priorities: lane subjects, decoding a lane, the job builder's field, the redrive and the
timer that keep a job's lane, the arbiter's choice of lane, and a worker on the in-memory log
that starts queued jobs highest priority first."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ferrisqueue.domain.commands import decide_redrive
from ferrisqueue.domain.dependencies import decide_dependencies
from ferrisqueue.domain.events import (
    Awaiting,
    DeadLettered,
    Failed,
    Redriven,
    Released,
    Scheduled,
    Started,
    Submitted,
    Succeeded,
    decode_event,
    encode_event,
    utcnow,
)
from ferrisqueue.domain.fold import fold
from ferrisqueue.domain.jobbuilder import JobRefused, build_job
from ferrisqueue.domain.states import PendingReason
from ferrisqueue.domain.subjects import (
    due_subject,
    lane_notices,
    runnable_filters,
    split_event_token,
)
from ferrisqueue.errors import DecodeError
from scheduler.timers import Timer
from tests.support.memory import (
    memory_log,
    memory_settings,
    running_worker,
    submit,
    wait_for_kinds,
)
from worker.context import JobContext
from worker.lanes import IDLE_WAIT, LaneArbiter
from worker.registry import TaskRegistry

pytestmark = pytest.mark.timeout(10)

JOB = "0190f3a2-7b1c-7d4e-8f00-123456789abc"


def test_the_default_priority_keeps_todays_subjects_and_others_get_a_lane() -> None:
    five = Submitted(job_id=JOB, queue="q", at=utcnow(), type="echo")
    nine = five.model_copy(update={"priority": 9})
    later = Scheduled(job_id=JOB, queue="q", at=utcnow(), type="echo", run_at=utcnow(), priority=9)

    assert five.priority == 5 and five.subject == f"fq.job.q.{JOB}.submitted"
    assert nine.subject == f"fq.job.q.{JOB}.submitted-p9"
    assert later.subject == f"fq.job.q.{JOB}.scheduled"  # not runnable: no lane
    assert runnable_filters("q") == [
        "fq.job.q.*.submitted",
        "fq.job.q.*.released",
        "fq.job.q.*.redriven",
    ]
    assert runnable_filters("q", 0) == [
        "fq.job.q.*.submitted-p0",
        "fq.job.q.*.released-p0",
        "fq.job.q.*.redriven-p0",
    ]
    assert (due_subject("q", JOB), due_subject("q", JOB, 9)) == (
        f"fq.due.q.{JOB}",
        f"fq.due.q.{JOB}.p9",
    )
    assert len(lane_notices("q")) == 18 and "fq.job.q.*.redriven-p0" in lane_notices("q")


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("submitted", ("submitted", 5)),
        ("released-p0", ("released", 0)),
        ("redriven-p9", ("redriven", 9)),
        ("started", ("started", None)),
        ("submitted-p5", ("submitted-p5", None)),  # the default lane has no suffix
        ("submitted-p10", ("submitted-p10", None)),
        ("started-p9", ("started-p9", None)),
    ],
)
def test_an_event_token_names_its_kind_and_lane(
    token: str, expected: tuple[str, int | None]
) -> None:
    assert split_event_token(token) == expected


def test_a_plain_producer_sets_the_priority_by_the_subject_alone() -> None:
    body = json.dumps({"type": "echo"}).encode()

    event = decode_event(f"fq.job.q.{JOB}.submitted-p2", body, stored_at=utcnow())
    fired = decode_event(f"fq.job.q.{JOB}.released-p2", b'{"attempt": 1}', stored_at=utcnow())

    assert isinstance(event, Submitted) and event.priority == 2
    assert isinstance(fired, Released) and fired.priority == 2
    again = decode_event(event.subject, encode_event(event))
    assert again == event.model_copy(update={"actor": again.actor})


@pytest.mark.parametrize(
    ("subject_token", "body", "reason"),
    [
        ("submitted", {"type": "echo", "priority": 9}, "priority 9 in the body contradicts 5"),
        ("submitted-p1", {"type": "echo", "priority": 9}, "priority 9 in the body contradicts 1"),
        ("submitted-p5", {"type": "echo"}, "event"),
        ("submitted-p12", {"type": "echo"}, "event"),
    ],
)
def test_a_body_that_contradicts_its_lane_is_undecodable(
    subject_token: str, body: dict[str, Any], reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(
            f"fq.job.q.{JOB}.{subject_token}", json.dumps(body).encode(), stored_at=utcnow()
        )

    assert reason in caught.value.reason


def test_the_job_builder_takes_a_priority_from_0_to_9() -> None:
    made = build_job({"type": "echo", "priority": 0}, {}, job_id=JOB, now=utcnow(), actor="t")

    assert made.priority == 0 and made.subject.endswith(".submitted-p0")
    with pytest.raises(JobRefused, match="priority"):
        build_job({"type": "echo", "priority": 10}, {}, job_id=JOB, now=utcnow(), actor="t")


def test_a_redrive_and_a_retry_go_back_to_the_jobs_lane() -> None:
    now = utcnow()
    history = [
        Submitted(job_id=JOB, queue="q", at=now, type="echo", priority=8),
        Started(job_id=JOB, queue="q", at=now, worker="w", attempt=1),
        Failed(job_id=JOB, queue="q", at=now, attempt=1, error="x", error_type="X"),
        DeadLettered(job_id=JOB, queue="q", at=now, reason="r"),
    ]

    redrive = decide_redrive(fold(history), history, actor="a", reason=None, now=now)
    timer = Timer("q", JOB, now, 1, PendingReason.RETRYING, priority=8)

    assert isinstance(redrive, tuple) and isinstance(redrive[0], Redriven)
    assert redrive[0].subject == f"fq.job.q.{JOB}.redriven-p8"
    assert timer.headers()["Nats-Schedule-Target"] == f"fq.due.q.{JOB}.p8"


def test_a_job_released_by_its_parents_goes_to_its_lane() -> None:
    now = utcnow()
    child = Awaiting(job_id=JOB, queue="q", at=now, type="echo", depends_on=["a"], priority=1)
    parent = [
        Submitted(job_id="a", queue="q", at=now, type="echo"),
        Started(job_id="a", queue="q", at=now, worker="w", attempt=1),
        Succeeded(job_id="a", queue="q", at=now, attempt=1, duration_ms=1),
    ]

    decision = decide_dependencies(fold([child]), [child], parents={"a": fold(parent)}, now=now)

    assert isinstance(decision, tuple) and isinstance(decision[0], Released)
    assert decision[0].subject == f"fq.job.q.{JOB}.released-p1"


def test_the_default_priority_is_left_out_of_stored_bodies() -> None:
    five = Submitted(job_id=JOB, queue="q", at=utcnow(), type="echo")

    assert b"priority" not in encode_event(five)
    assert b'"priority":9' in encode_event(five.model_copy(update={"priority": 9}))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_arbiter_asks_the_highest_lane_with_work_then_probes_then_waits() -> None:
    clock = FakeClock()
    given_back: list[int] = []

    async def slots() -> int:
        return 4

    lanes = LaneArbiter(
        slots, given_back.append, probe_every=0.5, default_probe_every=0.5, clock=clock
    )

    # At first every lane is due for a look, highest first; then it waits on the default.
    for lane in (9, 8, 7, 6, 5, 4, 3, 2, 1, 0):
        assert await lanes.take(lane) == 4
        lanes.unused(lane, 4)  # nothing there
    assert lanes.choose() == IDLE_WAIT
    lanes.notice(f"fq.job.q.{JOB}.submitted-p3")
    assert lanes.choose() == 3
    lanes.notice(f"fq.job.q.{JOB}.redriven-p7")
    assert lanes.choose() == 7  # strict: the higher lane first
    clock.now += 0.5
    assert lanes.choose() == 9  # a look at the lanes above, every probe interval
    assert given_back == [4] * 10


async def test_a_lane_is_not_asked_while_another_request_is_out() -> None:
    lanes = LaneArbiter(_four, lambda _: None, probe_every=60, default_probe_every=60)
    assert await lanes.take(9) == 4

    waiting = asyncio.create_task(lanes.take(8))
    await asyncio.sleep(0)  # let it wait: not its turn while lane 9's request is out
    assert not waiting.done()
    lanes.unused(9, 4)
    assert await asyncio.wait_for(waiting, 1) == 4


async def _four() -> int:
    return 4


async def test_a_worker_starts_queued_jobs_highest_priority_first() -> None:
    log = await memory_log()
    order: list[str] = []
    registry = TaskRegistry()

    @registry.task("note")
    async def note(ctx: JobContext, payload: dict[str, Any]) -> None:
        order.append(payload["name"])

    jobs = [
        await submit(log, "note", payload={"name": f"p{p}-{n}"}, priority=p)
        for n in range(3)
        for p in (0, 5, 9, 2, 7)
    ]
    async with running_worker(log, registry, memory_settings(worker_concurrency=1)):
        for job in jobs:
            await wait_for_kinds(log, job, "succeeded")

    assert [name.split("-")[0] for name in order] == ["p9"] * 3 + ["p7"] * 3 + ["p5"] * 3 + [
        "p2"
    ] * 3 + ["p0"] * 3
    assert order[:3] == ["p9-0", "p9-1", "p9-2"]  # first in, first out within a lane
