"""A bounded fuzz over raw NATS: hostile messages (``tests/hostile/rawnats.py``) published
straight to ``fq.job.>`` while a real worker, projector and scheduler run.

What must hold afterwards:

- **Nothing crashed**: the three processes are alive, and a known-good job published after
  the fuzz runs end to end (``completed`` in the read store).
- **Every message is accounted for.** A message is *accounted for* when exactly one of these
  is true:
  1. the stream refused it, with a reason (a JetStream API error with a description, or the
     client's max-payload refusal): it is not in the log;
  2. it was a duplicate (``Nats-Msg-Id`` seen within the window): the ack names the
     sequence of the message already stored, and nothing new is stored;
  3. it is stored and undecodable, on a subject the workers consume (a runnable event of
     the consumed queue): a copy is in ``FQ_DLQ`` whose ``Fq-Stream-Seq`` is its sequence,
     with a non-empty ``Fq-Reason``;
  4. it is stored and undecodable anywhere else (no worker will ever run it): the projector
     has parked it in the timeline (``job_events`` row at its sequence, ``applied`` false,
     ``rejected_because`` "undecodable: <reason>"), which ``GET /jobs/{id}/events`` and
     ``/projections`` (``parked_events``) show;
  5. it is stored and a valid event: nothing to account for beyond the read store below.
  No publish may time out (an unknown outcome would be unaccountable).
- **The read store equals a fresh fold of the log**: ``fq projections verify`` prints
  "0 differences".

Bounded by ``FQ_FUZZ_NATS_MESSAGES`` (default 300) messages from seed ``FQ_FUZZ_SEED``
(printed), so a failure reproduces with the same seed.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from sqlmodel import Session, col, select

from ferrisqueue.domain.events import decode_event, utcnow
from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.subjects import DLQ_STREAM, EVENT_STREAM, RUNNABLE_EVENTS, job_subject
from ferrisqueue.errors import DecodeError
from ferrisqueue.log.eventlog import EventLog
from ferrisqueue.settings import Settings
from ferrisqueue.store import queries
from ferrisqueue.store.models import JobEventRow, JobRow
from projections import jobs
from tests.conftest import StartService
from tests.hostile.rawnats import QUEUE, RawMessage, hostile_messages
from tests.integration.test_projector import read_store
from tests.support.procs import run_fq
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(150)]

MESSAGES = int(os.environ.get("FQ_FUZZ_NATS_MESSAGES", "300"))
SEED = int(os.environ.get("FQ_FUZZ_SEED", "16"))


def _runnable_on_consumed_queue(subject: str) -> bool:
    parts = subject.split(".")
    return len(parts) == 5 and parts[2] == QUEUE and parts[4] in RUNNABLE_EVENTS


async def _publish(nc: Client, message: RawMessage) -> tuple[str, Any]:
    """('stored', seq) | ('duplicate', seq) | ('refused', reason)."""
    try:
        ack = await nc.jetstream().publish(
            message.subject, message.data, headers=message.headers or None, timeout=5
        )
    except nats.js.errors.APIError as exc:
        reason = exc.description or ""
        assert reason, f"refused without a reason: {exc!r} for {message.subject}"
        return "refused", reason
    except nats.errors.MaxPayloadError as exc:
        return "refused", f"max payload: {exc}"
    return ("duplicate" if ack.duplicate else "stored"), ack.seq


async def _dead_letters(nc: Client) -> dict[int, str]:
    """Fq-Stream-Seq -> Fq-Reason of every copy in FQ_DLQ."""
    js = nc.jetstream()
    info = await js.stream_info(DLQ_STREAM)
    found: dict[int, str] = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        try:
            msg = await js.get_msg(DLQ_STREAM, seq)
        except nats.js.errors.NotFoundError:
            continue
        headers = msg.headers or {}
        if "Fq-Stream-Seq" in headers:
            found[int(headers["Fq-Stream-Seq"])] = headers.get("Fq-Reason", "")
    return found


async def test_hostile_raw_messages_crash_nothing_and_each_is_accounted_for(
    start: StartService,
    nc: Client,
    settings: Settings,
    event_log: EventLog,
    tmp_path: Path,
) -> None:
    print(f"nats fuzz: {MESSAGES} messages, seed FQ_FUZZ_SEED={SEED}")
    services = [start("worker"), start("projections"), start("scheduler")]
    started = time.monotonic()
    outcomes: dict[str, int] = {"stored": 0, "duplicate": 0, "refused": 0}
    stored: list[tuple[int, RawMessage]] = []
    refusals: Counter[str] = Counter()
    for message in hostile_messages(SEED, MESSAGES):
        kind, value = await _publish(nc, message)
        outcomes[kind] += 1
        if kind == "stored":
            stored.append((value, message))
        elif kind == "refused":
            refusals[str(value)[:60]] += 1
    print(f"nats fuzz: published in {time.monotonic() - started:.1f} s: {outcomes}")
    print(f"nats fuzz: refusals {dict(refusals.most_common())}")

    # The oracle for "undecodable" is the product's decoder itself; its bugs are found by
    # the crash and accounting checks (a decode that raises anything but DecodeError).
    must_dlq: set[int] = set()
    must_park: set[int] = set()
    for seq, message in stored:
        try:
            # Any time will do for the JetStream timestamp that stands in for a missing `at`.
            decode_event(message.subject, message.data, stored_at=utcnow())
        except DecodeError:
            (must_dlq if _runnable_on_consumed_queue(message.subject) else must_park).add(seq)

    # A known-good job after the fuzz: it runs end to end.
    good = new_job_id()
    await nc.jetstream().publish(
        job_subject(QUEUE, good, "submitted"), json.dumps({"type": "echo"}).encode()
    )
    engine = read_store(settings.effective_database_url)

    async def good_status() -> str | None:
        with Session(engine) as session:
            row = session.get(JobRow, good)
            return row.status if row else None

    await wait_until(good_status, lambda s: s == "completed", timeout=60, what="the good job")
    letters = await wait_until(
        lambda: _dead_letters(nc),
        lambda found: must_dlq <= found.keys(),
        timeout=30,
        what=f"{len(must_dlq)} undecodable runnable messages in FQ_DLQ",
    )
    last = (await nc.jetstream().stream_info(EVENT_STREAM)).state.last_seq

    async def checkpoint() -> int:
        with Session(engine) as session:
            return queries.checkpoint(session, jobs.NAME)

    await wait_until(checkpoint, lambda p: p >= last, timeout=30, what=f"checkpoint {last}")
    with Session(engine) as session:
        rows = {
            r.seq: r
            for r in session.exec(select(JobEventRow).where(col(JobEventRow.seq).in_(must_park)))
        }
    verify = await run_fq(settings, tmp_path, "projections", "verify")
    engine.dispose()
    print(
        f"nats fuzz: {len(must_dlq)} dead-lettered, {len(must_park)} parked, "
        f"done in {time.monotonic() - started:.1f} s"
    )

    dead = [s.name for s in services if not s.alive()]
    assert not dead, f"died: {dead}\n" + "\n".join(s.log()[-3000:] for s in services)
    assert all(letters[seq] for seq in must_dlq), "a dead letter without Fq-Reason"
    unparked = [
        seq
        for seq in must_park
        if seq not in rows
        or rows[seq].applied
        or not (rows[seq].rejected_because or "").startswith("undecodable: ")
    ]
    by_seq = dict(stored)
    assert not unparked, "undecodable messages not parked:\n" + "\n".join(
        f"{seq}: {by_seq[seq].subject} {by_seq[seq].headers} {by_seq[seq].data[:200]!r} "
        f"-> {rows.get(seq, 'no row')}"
        for seq in unparked
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.rstrip().endswith("0 differences"), verify.stdout
