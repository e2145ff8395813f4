"""Periodic jobs on a real nats-server with real scheduler processes: the server fires the
schedules, the schedulers turn each tick into exactly one job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.cron import CronSpec, UnknownSchedule, tick_job_id
from ferrisqueue.domain.events import utcnow
from ferrisqueue.domain.jobbuilder import JobRefused
from ferrisqueue.domain.subjects import SCHEDULE_STREAM, cron_subject, tick_subject
from ferrisqueue.log.cronbook import CronBook
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.log.natsconn import connect
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.puller import NatsDelivery
from ferrisqueue.settings import Settings
from scheduler.cron import TICK_CONSUMER, Outcome, Tick, TickRelay
from tests.conftest import StartService
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

ACTOR = "cli:tester@test-host"

Body = dict[str, Any]


def spec(name: str, schedule: str, **fields: Any) -> CronSpec:
    return CronSpec.model_validate(
        {"name": name, "schedule": schedule, "job": {"type": "echo", "payload": {"n": name}}}
        | fields
    )


def at(body: Body) -> datetime:
    return datetime.fromisoformat(body["at"])


def of(bodies: list[Body], name: str) -> list[Body]:
    return [b for b in bodies if b.get("actor") == f"cron:{name}"]


async def cron_jobs(
    nc: Client, name: str, until: Callable[[list[Body]], bool], timeout: float = 20
) -> list[Body]:
    """The ``submitted`` events the schedule ``name`` created, once ``until`` holds."""
    bodies = await collect_events(
        nc, "fq.job.*.*.submitted", until=lambda b: until(of(b, name)), timeout=timeout
    )
    return of(bodies, name)


async def stored_ticks(nc: Client, name: str) -> list[tuple[int, datetime]]:
    """(sequence, time) of every tick of ``name`` in the stream, read as the relay reads them."""
    js = nc.jetstream()
    info = await js.stream_info(SCHEDULE_STREAM, subjects_filter=tick_subject(name))
    count = (info.state.subjects or {}).get(tick_subject(name), 0)
    sub = await js.subscribe(tick_subject(name), stream=SCHEDULE_STREAM, ordered_consumer=True)
    try:
        ticks = [Tick.of(NatsDelivery.of(await sub.next_msg(timeout=5))) for _ in range(count)]
    finally:
        await sub.unsubscribe()
    return [(t.seq, t.fired_at) for t in ticks]


async def consuming(nc: Client, instances: int) -> None:
    """Wait until ``instances`` schedulers have a pull request waiting on the tick consumer."""
    js = nc.jetstream()

    async def waiting() -> int:
        try:
            return int((await js.consumer_info(SCHEDULE_STREAM, TICK_CONSUMER)).num_waiting)
        except nats.js.errors.NotFoundError:
            return 0

    await wait_until(
        waiting, lambda n: n >= instances, timeout=30, what=f"{instances} schedulers pulling"
    )


@pytest.fixture
async def book(event_log: EventLog, nc: Client, settings: Settings) -> CronBook:
    return CronBook.for_settings(NatsLog(nc), settings)


@pytest.mark.timeout(55)
async def test_every_2s_for_10s_with_two_schedulers_makes_5_jobs_without_duplicates(
    start: StartService, book: CronBook, nc: Client
) -> None:
    start("scheduler")
    start("scheduler")
    await consuming(nc, 2)

    await book.put(spec("every2", "*/2 * * * * *"), actor=ACTOR)
    defined_at = utcnow()
    window_end = defined_at + timedelta(seconds=10)
    # The ticks themselves measure the 10 s: wait for the job of the first tick after them.
    jobs = await cron_jobs(nc, "every2", lambda js: any(at(j) >= window_end for j in js), 30)
    await book.delete("every2", actor=ACTOR)

    in_window = [j for j in jobs if at(j) < window_end]
    ticks = [(s, t) for s, t in await stored_ticks(nc, "every2") if t < window_end]
    assert 4 <= len(in_window) <= 6, [j["at"] for j in in_window]
    assert sorted(j["job_id"] for j in in_window) == sorted(
        tick_job_id("every2", seq, fired) for seq, fired in ticks
    ), "each tick made exactly its one job"
    assert len({j["job_id"] for j in jobs}) == len({j["at"] for j in jobs}) == len(jobs)


@pytest.mark.timeout(55)
async def test_ticks_still_become_jobs_after_one_of_two_schedulers_is_killed(
    start: StartService, book: CronBook, nc: Client
) -> None:
    doomed = start("scheduler")
    start("scheduler")
    await consuming(nc, 2)
    await book.put(spec("survives", "@every 1s"), actor=ACTOR)
    await cron_jobs(nc, "survives", lambda js: len(js) >= 2)

    doomed.kill()
    killed_at = utcnow()
    await cron_jobs(
        nc, "survives", lambda js: any(at(j) >= killed_at + timedelta(seconds=3) for j in js)
    )
    horizon = utcnow()
    expected = {
        tick_job_id("survives", seq, fired)
        for seq, fired in await stored_ticks(nc, "survives")
        if fired < horizon
    }

    # A tick the killed instance held comes back after the consumer's AckWait (10 s).
    jobs = await cron_jobs(
        nc, "survives", lambda js: expected <= {j["job_id"] for j in js}, timeout=30
    )
    await book.delete("survives", actor=ACTOR)
    assert len([j for j in jobs if at(j) > killed_at]) >= 3
    assert len({j["job_id"] for j in jobs}) == len(jobs)


@pytest.mark.timeout(55)
async def test_pause_resume_and_delete(start: StartService, book: CronBook, nc: Client) -> None:
    start("scheduler")
    await book.put(spec("witness", "@every 1s"), actor=ACTOR)
    await book.put(spec("toggled", "@every 1s"), actor=ACTOR)
    await cron_jobs(nc, "toggled", lambda js: len(js) >= 1)

    paused = await book.pause("toggled", actor=ACTOR)
    paused_at = utcnow()
    # Another schedule's later jobs show time passed (and that earlier ticks were handled).
    await cron_jobs(
        nc, "witness", lambda js: any(at(j) >= paused_at + timedelta(seconds=3) for j in js)
    )
    while_paused = [j for j in await cron_jobs(nc, "toggled", bool) if at(j) > paused_at]
    late_ticks = [t for _, t in await stored_ticks(nc, "toggled") if t > paused_at]
    assert paused.paused and (await book.get("toggled")) == paused
    assert await book.next_fires(paused) == []
    assert while_paused == [] and late_ticks == []

    await book.resume("toggled", actor=ACTOR)
    resumed_at = utcnow()
    await cron_jobs(nc, "toggled", lambda js: any(at(j) > resumed_at for j in js))

    await book.delete("toggled", actor=ACTOR)
    deleted_at = utcnow()
    await cron_jobs(
        nc, "witness", lambda js: any(at(j) >= deleted_at + timedelta(seconds=3) for j in js)
    )
    after_delete = [j for j in await cron_jobs(nc, "toggled", bool) if at(j) > deleted_at]
    assert after_delete == []
    assert await book.get("toggled") is None
    assert [d.name for d in await book.definitions()] == ["witness"]
    with pytest.raises(UnknownSchedule):
        await book.delete("toggled", actor=ACTOR)
    with pytest.raises(UnknownSchedule):
        await book.pause("toggled", actor=ACTOR)


@pytest.mark.timeout(55)
async def test_ticks_older_than_the_misfire_grace_make_no_job(
    start: StartService, book: CronBook, nc: Client
) -> None:
    await book.put(spec("backlog", "@every 1s"), actor=ACTOR)
    # No scheduler yet: let ticks pile up, measured by the ticks themselves.
    first_fired = (
        await wait_until(
            lambda: stored_ticks(nc, "backlog"),
            lambda ts: len(ts) >= 2 and ts[-1][1] - ts[0][1] >= timedelta(seconds=4),
            timeout=20,
            what="4 s of ticks",
            interval=0.2,
        )
    )[0]

    scheduler = start("scheduler", FQ_CRON_MISFIRE_GRACE="2")
    jobs = await cron_jobs(nc, "backlog", lambda js: len(js) >= 2)

    missed = tick_job_id("backlog", *first_fired)
    assert missed not in {j["job_id"] for j in jobs}
    assert min(at(j) for j in jobs) > first_fired[1] + timedelta(seconds=2)
    assert "past the misfire grace" in scheduler.log()


async def test_two_relays_racing_on_one_tick_make_one_job(
    book: CronBook, nc: Client, settings: Settings
) -> None:
    # Defined and active; no tick during the test.
    await book.put(spec("raced", "@every 1h"), actor=ACTOR)
    other = await connect(settings.effective_nats_url, name="other-instance")
    try:
        relays = [TickRelay.for_settings(NatsLog(conn), settings) for conn in (nc, other, nc)]
        tick = Tick("raced", seq=1234, fired_at=utcnow())

        outcomes = await asyncio.gather(*(r.create_job(tick) for r in relays))
        again = await relays[1].create_job(tick)  # a redelivery after the first was stored
        history = await NatsLog(nc).history(tick.job_id)
    finally:
        await other.close()

    # The losers are refused by the guard (checked before the Nats-Msg-Id duplicate window).
    assert sorted(outcomes) == [Outcome.ALREADY_CREATED] * 2 + [Outcome.CREATED]
    assert again is Outcome.ALREADY_CREATED
    assert [s.event.kind.value for s in history if s.event] == ["submitted"]
    assert history[0].event is not None and history[0].event.actor == "cron:raced"

    late = await relays[0].create_job(tick, now=tick.fired_at + timedelta(minutes=2))
    await book.pause("raced", actor=ACTOR)
    paused = await relays[0].create_job(Tick("raced", seq=1235, fired_at=utcnow()))
    unknown = await relays[0].create_job(Tick("nobody", seq=1236, fired_at=utcnow()))
    assert (late, paused, unknown) == (Outcome.MISFIRED, Outcome.NOT_ACTIVE, Outcome.NOT_ACTIVE)


async def test_an_unchanged_definition_leaves_its_server_schedule_alone(
    book: CronBook, nc: Client
) -> None:
    js = nc.jetstream()
    await book.put(spec("steady", "@every 2s"), actor=ACTOR)
    first = await js.get_last_msg(SCHEDULE_STREAM, cron_subject("steady"))

    await book.put(spec("steady", "@every 2s"), actor=ACTOR)
    again = await js.get_last_msg(SCHEDULE_STREAM, cron_subject("steady"))
    await book.put(spec("steady", "@every 3s"), actor=ACTOR)
    changed = await js.get_last_msg(SCHEDULE_STREAM, cron_subject("steady"))

    assert again.seq == first.seq, "re-publishing would restart the interval"
    assert changed.seq != first.seq
    assert changed.headers is not None
    assert changed.headers["Nats-Schedule"] == "@every 3s"
    assert changed.headers["Nats-Schedule-Target"] == "fq.tick.steady"
    assert changed.headers["Nats-Schedule-TTL"] == "120s"


async def test_reconcile_restores_missing_schedules_and_cancels_orphans(
    book: CronBook, nc: Client
) -> None:
    js = nc.jetstream()
    await book.put(spec("kept", "0 0 9 * * mon-fri", timezone="Europe/Berlin"), actor=ACTOR)
    await book.put(spec("resting", "@hourly", paused=True), actor=ACTOR)
    await js.purge_stream(SCHEDULE_STREAM, subject=cron_subject("kept"))  # a crash's leftovers
    await js.publish(
        cron_subject("ghost"),
        b"",
        headers={"Nats-Schedule": "@every 5s", "Nats-Schedule-Target": tick_subject("ghost")},
    )

    await book.reconcile()

    kept = await js.get_last_msg(SCHEDULE_STREAM, cron_subject("kept"))
    assert kept.headers is not None
    assert kept.headers["Nats-Schedule"] == "0 0 9 * * mon-fri"
    assert kept.headers["Nats-Schedule-Time-Zone"] == "Europe/Berlin"
    for absent in ("ghost", "resting"):
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.get_last_msg(SCHEDULE_STREAM, cron_subject(absent))


async def test_every_expression_the_book_accepts_the_server_runs(book: CronBook) -> None:
    for n, expression in enumerate(
        [
            "*/2 * * * * *",
            "*/5 * * * *",
            "0 0 0 29 2 *",
            "0 0 9 1-15/2 JAN,jul ?",
            "1,2,3-5/2 * * * * *",
            "0 0 0 * * sun-sat",
            "@annually",
            "@midnight",
            "@every 1h30m",
        ]
    ):
        stored = await book.put(spec(f"s{n}", expression), actor=ACTOR)
        assert (await book.next_fires(stored, count=2))[0] > utcnow() - timedelta(seconds=1)


async def test_the_scheduler_applies_the_cron_file_at_start(
    start: StartService, book: CronBook, tmp_path: Path
) -> None:
    await book.put(spec("from-api", "@daily"), actor=ACTOR)
    await book.put(spec("dropped-from-file", "@daily"), source="file", actor=ACTOR)
    cron_file = tmp_path / "cron.toml"
    cron_file.write_text(
        '[[schedule]]\nname = "from-file"\nschedule = "0 15 * * *"\n'
        'timezone = "Asia/Tokyo"\njob = { type = "echo", payload = { hello = "file" } }\n'
        '[[schedule]]\nname = "file-paused"\nschedule = "@every 1m"\npaused = true\n'
        'job = { type = "echo" }\n'
    )

    start("scheduler", FQ_CRON_FILE=str(cron_file))
    names = await wait_until(
        lambda: book.definitions(),
        lambda ds: "dropped-from-file" not in {d.name for d in ds},
        timeout=30,
        what="the cron file applied",
    )

    by_name = {d.name: d for d in names}
    assert set(by_name) == {"from-api", "from-file", "file-paused"}
    assert by_name["from-file"].source == "file" and by_name["from-api"].source == "api"
    assert by_name["from-file"].schedule == "0 0 15 * * *"
    assert by_name["from-file"].job.payload == {"hello": "file"}
    assert await book.next_fires(by_name["file-paused"]) == []


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ('schedule = "@often"\njob = { type = "e" }', "unknown schedule '@often'"),
        (
            'schedule = "@hourly"\njob = { type = "cleanup", payload = {} }',
            "the job of schedule x is refused: payload.older_than_seconds: Field required",
        ),
    ],
    ids=["bad-expression", "payload-breaking-its-contract"],
)
async def test_a_scheduler_with_a_broken_cron_file_stops_and_says_why(
    start: StartService, tmp_path: Path, event_log: EventLog, table: str, reason: str
) -> None:
    cron_file = tmp_path / "cron.toml"
    cron_file.write_text(f'[[schedule]]\nname = "x"\n{table}\n')

    scheduler = start("scheduler", FQ_CRON_FILE=str(cron_file))
    await wait_until(
        lambda: _alive(scheduler), lambda alive: not alive, timeout=30, what="scheduler exit"
    )

    assert scheduler.process.returncode != 0
    assert reason in scheduler.log()


async def test_a_schedule_whose_job_breaks_its_contract_is_refused_and_never_stored(
    book: CronBook, nc: Client
) -> None:
    bad = spec("purge", "@hourly", job={"type": "cleanup", "payload": {"older_than_seconds": -1}})

    with pytest.raises(JobRefused) as refused:
        await book.put(bad, actor=ACTOR)

    assert refused.value.errors[0]["loc"] == ("payload", "older_than_seconds")
    assert await book.definitions() == []
    assert await book.get("purge") is None


async def test_a_tick_of_a_stored_schedule_whose_job_breaks_its_contract_creates_no_job(
    nc: Client, settings: Settings, event_log: EventLog
) -> None:
    # Stored as a schedule defined before definitions were checked would be: by a book
    # that knows no contracts.
    unchecked = CronBook.for_settings(event_log, settings, job_types={})
    await unchecked.put(
        spec("legacy", "@every 1h", job={"type": "cleanup", "payload": {}}), actor=ACTOR
    )
    relay = TickRelay.for_settings(event_log, settings)
    tick = Tick("legacy", seq=77, fired_at=utcnow())

    outcome = await relay.create_job(tick)

    assert outcome is Outcome.REFUSED
    assert await event_log.history(tick.job_id) == []


async def _alive(process: Any) -> bool:
    return bool(process.alive())
