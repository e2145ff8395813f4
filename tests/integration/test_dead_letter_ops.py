"""Dead letters for operators, end to end: list and inspect them, redrive or purge them by id
or by filter through the gateway and `fq dead-letters`; every action is an event naming who
did it, and FQ_DLQ keeps only what is dead now.

Dead letters are made the way a worker that gave up makes them: the job is taken off its
queue's dispatch consumer, fails its attempt, and ``dead_letter()`` copies its message to
FQ_DLQ and appends ``dead_lettered``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats.js.errors
import pytest
from nats.aio.client import Client

from ferrisqueue.domain.events import Failed, Started, utcnow
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.stored import fold_history
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, dlq_subject
from ferrisqueue.log.deadletter import dead_letter
from ferrisqueue.log.embedded import EmbeddedNats
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from tests.conftest import StartService
from tests.support.procs import run_fq
from tests.support.waits import collect_events, wait_until

pytestmark = pytest.mark.integration

DISPATCH = "fq-worker-default"  # the only dispatch consumer before a worker starts


@dataclass(frozen=True)
class Letter:
    queue: str = "default"
    type: str = "echo"
    reason: str = "attempts exhausted"
    error: str = "boom"


class System:
    """The gateway, the projector and the log of one test."""

    def __init__(self, gateway: httpx.AsyncClient, nc: Client, event_log: EventLog) -> None:
        self.http, self.nc, self.log = gateway, nc, event_log

    async def dead(self, *letters: Letter) -> list[str]:
        """Submit one job per letter, take the default queue's off its dispatch consumer
        (as a worker does), fail their first attempt and dead-letter them, in order."""
        ids = []
        for n, letter in enumerate(letters):
            answer = await self.http.post(
                "/jobs", json={"type": letter.type, "queue": letter.queue, "payload": {"n": n}}
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
        await self._take(sum(1 for letter in letters if letter.queue == "default"))
        for job_id, letter in zip(ids, letters, strict=True):
            job = {"job_id": job_id, "queue": letter.queue}
            await self.log.append(Started(**job, at=utcnow(), attempt=1, worker="w-test"))
            await self.log.append(
                Failed(**job, at=utcnow(), attempt=1, error=letter.error, error_type="error:X")
            )
            history = await self.log.history(job_id)
            await dead_letter(
                self.log,
                queue=letter.queue,
                job_id=job_id,
                original=history[0].data,
                reason=letter.reason,
                dedup=str(history[0].seq),
                actor="worker:w-test",
                lineage={
                    "Stream-Seq": history[0].seq,
                    "Attempts": 1,
                    "Last-Worker": "w-test",
                    "Last-Error": letter.error,
                },
            )
        return ids

    async def _take(self, count: int) -> None:
        sub = await self.nc.jetstream().pull_subscribe_bind(durable=DISPATCH, stream=EVENT_STREAM)
        taken = 0
        try:
            while taken < count:  # fetch waits up to its timeout for the messages to arrive
                for msg in await sub.fetch(count - taken, timeout=10):
                    await msg.ack()
                    taken += 1
        finally:
            await sub.unsubscribe()

    async def listed(self, expected: int, **params: Any) -> list[dict[str, Any]]:
        """The dead letters ``params`` select, once the projector shows ``expected`` of them."""
        answer = await wait_until(
            lambda: self.http.get("/dead-letters", params=params),
            lambda r: r.status_code == 200 and len(r.json()["items"]) == expected,
            timeout=15,
            what=f"{expected} dead letters for {params}",
        )
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def in_dlq(self, queue: str, job_id: str) -> bool:
        try:
            await self.nc.jetstream().get_last_msg(DLQ_STREAM, dlq_subject(queue, job_id))
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def act(self, action: str, **body: Any) -> dict[str, Any]:
        answer = await self.http.post(f"/dead-letters/{action}", json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result


@pytest.fixture
async def system(
    gateway: httpx.AsyncClient, start: StartService, nc: Client, event_log: EventLog
) -> System:
    start("projections")
    return System(gateway, nc, event_log)


def ids_of(items: list[dict[str, Any]]) -> list[str]:
    return [item["job_id"] for item in items]


async def test_listing_filters_by_queue_type_reason_and_time_and_pages(system: System) -> None:
    early = await system.dead(
        Letter(reason="handler said PERMANENT: bad input"),
        Letter(queue="mail", type="mailer", error="SMTP Timeout after 30 s"),
    )
    boundary = utcnow()
    late = await system.dead(
        Letter(type="nap", reason="given up after 5 deliveries"),
        Letter(queue="mail", type="mailer", reason="attempts exhausted"),
    )
    newest_first = list(reversed(early + late))

    assert ids_of(await system.listed(4)) == newest_first
    assert ids_of(await system.listed(2, queue="mail")) == [late[1], early[1]]
    assert ids_of(await system.listed(1, type="nap")) == [late[0]]
    assert ids_of(await system.listed(1, reason="permanent")) == [early[0]]
    assert ids_of(await system.listed(1, reason="smtp timeout")) == [early[1]]  # the last error
    assert ids_of(await system.listed(2, since=boundary.isoformat())) == list(reversed(late))
    assert ids_of(await system.listed(2, until=boundary.isoformat())) == list(reversed(early))
    first = (await system.http.get("/dead-letters", params={"limit": 3})).json()
    rest = (
        await system.http.get("/dead-letters", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    assert ids_of(first["items"]) + ids_of(rest["items"]) == newest_first
    assert rest["next_cursor"] is None
    row = (await system.listed(1, type="nap"))[0]
    assert (row["attempts"], row["last_error"], row["resolution"]) == (1, "boom", None)

    naive = await system.http.get("/dead-letters", params={"since": "2026-01-01T00:00:00"})
    bad_cursor = await system.http.get("/dead-letters", params={"cursor": "nonsense"})
    assert naive.status_code == bad_cursor.status_code == 422


async def test_inspect_shows_the_kept_message_its_lineage_and_the_jobs_status(
    system: System,
) -> None:
    [job_id] = await system.dead(Letter(reason="handler said PERMANENT", error="bad input"))
    alive = (await system.http.post("/jobs", json={"type": "echo"})).json()["job_id"]

    shown = await system.http.get(f"/dead-letters/{job_id}")
    not_dead = await system.http.get(f"/dead-letters/{alive}")
    unknown = await system.http.get("/dead-letters/no-such-job")

    assert shown.status_code == 200, shown.text
    detail = shown.json()
    assert (detail["status"], detail["dead_lettered"], detail["attempts"]) == ("failed", True, 1)
    assert detail["last_error"] == "bad input"
    message = detail["message"]
    assert message["subject"] == f"fq.dlq.default.{job_id}"
    assert message["body"]["type"] == "echo" and message["body"]["payload"] == {"n": 0}
    assert json.loads(message["text"]) == message["body"]
    assert message["lineage"]["Fq-Reason"] == "handler said PERMANENT"
    assert message["lineage"]["Fq-Attempts"] == "1"
    assert message["lineage"]["Fq-Last-Error"] == "bad input"
    assert not_dead.status_code == unknown.status_code == 404


@pytest.mark.timeout(45)
async def test_redrive_one_by_id_records_the_operator_and_the_job_runs_again(
    system: System, start: StartService
) -> None:
    [job_id, other] = await system.dead(Letter(), Letter())
    await system.listed(2)

    result = await system.act("redrive", job_ids=[job_id], reason="fixed in 1.4")

    assert result["results"] == [
        {"job_id": job_id, "queue": "default", "outcome": "redriven", "why": None}
    ]
    assert (result["done"], result["skipped"], result["more"]) == (1, 0, False)
    history = await system.log.history(job_id)
    redriven = history[-1].event
    assert redriven is not None and redriven.kind.value == "redriven"
    # No authentication in this test: the gateway's stand-in caller is the actor.
    assert redriven.model_dump(include={"actor", "reason", "attempt"}) == {
        "actor": "anonymous",
        "reason": "fixed in 1.4",
        "attempt": 1,
    }
    state = fold_history(history)
    assert state is not None and state.status is JobStatus.PENDING and not state.dead_lettered
    assert not await system.in_dlq("default", job_id)
    assert await system.in_dlq("default", other)
    assert ids_of(await system.listed(1)) == [other]

    start("worker", FQ_WORKER_ID="w-after")
    done = await collect_events(
        system.nc, f"fq.job.*.{job_id}.succeeded", until=lambda b: len(b) == 1, timeout=20
    )
    assert done[0]["attempt"] == 2
    final = await wait_until(
        lambda: system.http.get(f"/jobs/{job_id}/status"),
        lambda r: r.json()["status"] == "completed",
        timeout=15,
        what="the redriven job completed",
    )
    assert final.json()["result"] == {"n": 0}
    trail = (await system.http.get(f"/jobs/{job_id}/events")).json()
    assert {"event": "redriven", "actor": "anonymous"}.items() <= next(
        e for e in trail if e["event"] == "redriven"
    ).items()


async def test_redrive_many_by_filter(system: System) -> None:
    timeouts = await system.dead(
        *[Letter(queue="mail", type="mailer", error=f"SMTP timeout #{n}") for n in range(3)]
    )
    untouched = await system.dead(
        Letter(queue="mail", type="mailer", error="mailbox full"),
        Letter(queue="default", error="SMTP timeout #4"),
    )
    await system.listed(5)

    result = await system.act("redrive", filter={"queue": "mail", "reason": "smtp TIMEOUT"})

    assert sorted(r["job_id"] for r in result["results"]) == sorted(timeouts)
    assert {r["outcome"] for r in result["results"]} == {"redriven"}
    assert (result["selected"], result["done"], result["limit"]) == (3, 3, 1000)
    events = await collect_events(
        system.nc, "fq.job.mail.*.redriven", until=lambda b: len(b) >= 3, timeout=10
    )
    assert sorted(e["job_id"] for e in events) == sorted(timeouts)
    assert {e["actor"] for e in events} == {"anonymous"}
    assert sorted(ids_of(await system.listed(2))) == sorted(untouched)
    info = await system.nc.jetstream().stream_info(DLQ_STREAM)
    assert info.state.messages == 2


async def test_purge_records_the_operator_and_the_job_stays_failed(system: System) -> None:
    [job_id, kept] = await system.dead(Letter(type="flaky"), Letter(type="flaky"))
    await system.listed(2)

    result = await system.act("purge", job_ids=[job_id], reason="bad data")

    assert [r["outcome"] for r in result["results"]] == ["purged"]
    purged = (await system.log.history(job_id))[-1].event
    assert purged is not None and purged.kind.value == "purged"
    assert purged.model_dump(include={"actor", "reason"}) == {
        "actor": "anonymous",
        "reason": "bad data",
    }
    assert ids_of(await system.listed(1)) == [kept]
    resolved = await system.listed(2, include_resolved="true")
    assert {r["job_id"]: (r["resolution"], r["resolved_by"]) for r in resolved}[job_id] == (
        "purged",
        "anonymous",
    )
    status = (await system.http.get(f"/jobs/{job_id}/status")).json()
    assert (status["status"], status["dead_lettered"]) == ("failed", False)
    assert not await system.in_dlq("default", job_id)
    assert await system.in_dlq("default", kept)
    gone = await system.http.get(f"/dead-letters/{job_id}")
    assert gone.status_code == 404


async def test_acting_on_jobs_that_are_not_dead_lettered_skips_them_and_says_why(
    system: System,
) -> None:
    [dead] = await system.dead(Letter())
    pending = (await system.http.post("/jobs", json={"type": "echo"})).json()["job_id"]

    first = await system.act("redrive", job_ids=[pending, "no-such-job", dead, dead])
    again = await system.act("purge", job_ids=[dead])

    assert [(r["job_id"], r["outcome"]) for r in first["results"]] == [
        (pending, "skipped"),
        ("no-such-job", "skipped"),
        (dead, "redriven"),  # named twice, acted on once
    ]
    assert first["results"][0]["why"] == "not dead-lettered (the job is pending)"
    assert first["results"][1]["why"] == "no such job in the event log"
    assert (first["done"], first["skipped"]) == (1, 2)
    assert again["results"][0]["outcome"] == "skipped"
    assert "not dead-lettered" in again["results"][0]["why"]
    history = await system.log.history(pending)
    assert [s.event.kind.value for s in history if s.event] == ["submitted"]


async def test_malformed_action_bodies_are_422(system: System) -> None:
    bodies: list[Any] = [
        {},
        {"job_ids": ["a"], "filter": {}},
        {"job_ids": ["a"], "by": "alice"},  # who acts is the caller, never the body
        {"job_ids": []},
        {"job_ids": ["bad id!"]},
        {"filter": {"queue": "q", "colour": "red"}},
        {"filter": {"since": "yesterday"}},
        ["a"],
    ]
    for action in ("redrive", "purge"):
        for body in bodies:
            answer = await system.http.post(f"/dead-letters/{action}", json=body)
            assert answer.status_code == 422, (action, body, answer.text)


async def test_actions_answer_503_while_nats_is_away_and_the_list_still_works(
    system: System, nats_server: EmbeddedNats
) -> None:
    [job_id] = await system.dead(Letter())
    await system.listed(1)

    nats_server.stop()
    refused = await system.http.post("/dead-letters/redrive", json={"job_ids": [job_id]})
    inspect = await system.http.get(f"/dead-letters/{job_id}")
    listing = await system.http.get("/dead-letters")

    assert refused.status_code == inspect.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert ids_of(listing.json()["items"]) == [job_id]


async def test_fq_dead_letters_list_show_redrive_and_purge(
    system: System, settings: Settings, tmp_path: Path
) -> None:
    [mail, other] = await system.dead(
        Letter(queue="mail", type="mailer", reason="SMTP refused"), Letter(reason="bad input")
    )
    await system.listed(2)

    listed = await run_fq(settings, tmp_path, "dead-letters", "list", "--queue", "mail")
    shown = await run_fq(settings, tmp_path, "dead-letters", "show", mail)
    redriven = await run_fq(settings, tmp_path, "dead-letters", "redrive", mail, "--note", "ok")
    unconfirmed = await run_fq(settings, tmp_path, "dead-letters", "purge", "--reason", "bad")
    purged = await run_fq(
        settings, tmp_path, "dead-letters", "purge", "--reason", "bad", "--yes", "--json"
    )

    assert listed.returncode == 0, listed.stderr
    assert mail in listed.stdout and other not in listed.stdout
    assert "SMTP refused" in listed.stdout
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["message"]["lineage"]["Fq-Reason"] == "SMTP refused"
    assert redriven.returncode == 0, redriven.stderr
    assert redriven.stdout.split() == ["redriven", mail]
    assert "1 done, 0 skipped" in redriven.stderr
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    assert purged.returncode == 0, purged.stderr
    answer = json.loads(purged.stdout)
    assert [(r["job_id"], r["outcome"]) for r in answer["results"]] == [(other, "purged")]
    assert answer["by"] == "anonymous"  # the caller the gateway authenticated (none here)
    events = [s.event for s in await system.log.history(mail) if s.event]
    assert events[-1] is not None and events[-1].kind.value == "redriven"
    assert events[-1].model_dump(include={"actor", "reason"}) == {
        "actor": "anonymous",
        "reason": "ok",
    }


async def test_two_operators_redriving_one_job_at_once_redrive_it_once(system: System) -> None:
    [job_id] = await system.dead(Letter())

    answers = await asyncio.gather(
        *(system.act("redrive", job_ids=[job_id], reason=f"op{n}") for n in range(2))
    )

    outcomes = sorted(a["results"][0]["outcome"] for a in answers)
    assert outcomes == ["redriven", "skipped"]
    events = [s.event for s in await system.log.history(job_id) if s.event]
    assert [e.kind.value for e in events].count("redriven") == 1
