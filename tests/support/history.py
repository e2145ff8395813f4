"""A history checker for fault tests, in the spirit of Jepsen.

The test's clients record what they *believe* about each operation (one submission of one job):

* **accepted** — the gateway answered 202 with a job id, or JetStream acked a raw publish;
* **rejected** — a definite refusal (4xx, a publish the client or server refused): never stored;
* **unknown** — a timeout, a 503, a dropped connection: it may or may not be stored. A client
  that retries with the same ``Idempotency-Key`` resolves it (a later 202 makes it accepted).

At the end, :func:`observe` reads what the system did: every message of ``FQ_EVENTS`` (the
whole log, in order), which jobs have a copy in ``FQ_DLQ``, and the read store's ``jobs`` and
``job_events`` rows with the projector's checkpoint. :func:`check` compares the two:

* ``lost`` — accepted ops whose job never reached an expected final state (or never appeared);
* ``unexpected`` — jobs in the log that no client accepted and no unknown op can explain;
* ``rejected_but_ran`` — jobs of rejected ops that were started;
* ``duplicated`` — one op that became several jobs (an idempotency failure);
* ``unexplained_reruns`` — a job started again although no worker it ran on died, no attempt
  failed with a retry, and nothing disturbed the system (at-least-once allows reruns only then);
* ``store_mismatches`` — the read store differs from a fresh fold of the log (a job id has one
  row by the primary key, so "duplicates collapse to one row" is checked through the counters
  the fold keeps: attempts, ``events_applied``, the timeline's sequences, and every other field);
* ``missing_dead_letters`` — a dead-lettered job with no copy in ``FQ_DLQ``.

Jobs are linked to ops by the job id the client learned, or by an ``"op"`` marker the client put
into the payload (so a job whose 202 never arrived is still recognised).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import nats.errors
from nats.aio.client import Client
from sqlalchemy import Engine
from sqlmodel import Session, select

from ferrisqueue.domain.events import Failed, JobSpec, Redriven, Started
from ferrisqueue.domain.fold import JobState
from ferrisqueue.domain.states import JobStatus
from ferrisqueue.domain.stored import StoredEvent, fold_history
from ferrisqueue.domain.subjects import (
    ALL_JOB_EVENTS,
    DLQ_STREAM,
    EVENT_STREAM,
    dlq_subject,
    parse_job_subject,
)
from ferrisqueue.log.puller import NatsDelivery
from ferrisqueue.store import queries
from ferrisqueue.store.models import JobEventRow, JobRow
from tests.support.waits import patiently

OP_MARKER = "op"
"""The payload field in which clients name the op that submitted a job."""

FINAL = frozenset({"completed", "canceled", "dead_lettered", "failed"})
"""Final outcomes a job can be expected to reach (see :func:`outcome_of`)."""

_EXPECT_SUBJECT = {
    "completed": "succeeded",
    "canceled": "canceled",
    "dead_lettered": "dead_lettered",
    "failed": "failed",
}
_TERMINAL_SUBJECTS = frozenset({"succeeded", "canceled", "dead_lettered"})


class Outcome(StrEnum):
    """What a client knows about one op."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


@dataclass
class Op:
    """One submission, as its client saw it."""

    op_id: str
    expect: frozenset[str]
    """The final outcomes its job may reach (``completed``, ``dead_lettered``, ...)."""
    job_id: str | None = None
    outcome: Outcome = Outcome.UNKNOWN
    tries: list[str] = field(default_factory=list)
    """What each try got: ``"202"``, ``"503"``, ``"timeout"``, ..."""
    other_job_ids: set[str] = field(default_factory=set)
    """Different job ids later tries were given (one key must mean one job)."""


class History:
    """What the clients of one test did and learned."""

    def __init__(self) -> None:
        self.ops: dict[str, Op] = {}
        self.workers_gone: set[str] = set()
        self.disruptions: list[str] = []

    def invoke(
        self, op_id: str, *, expect: Iterable[str] = ("completed",), job_id: str | None = None
    ) -> Op:
        """An op begins; until it completes its outcome is unknown (it may be stored)."""
        if op_id in self.ops:
            raise ValueError(f"op {op_id!r} invoked twice")
        wanted = frozenset(expect)
        if not wanted or not wanted <= FINAL:
            raise ValueError(f"expect must be a non-empty subset of {sorted(FINAL)}")
        op = Op(op_id, wanted, job_id)
        self.ops[op_id] = op
        return op

    def accepted(self, op_id: str, job_id: str, how: str = "202") -> None:
        op = self.ops[op_id]
        if op.job_id is None:
            op.job_id = job_id
        elif op.job_id != job_id:
            op.other_job_ids.add(job_id)
        op.outcome = Outcome.ACCEPTED
        op.tries.append(how)

    def rejected(self, op_id: str, how: str) -> None:
        op = self.ops[op_id]
        op.outcome = Outcome.REJECTED
        op.tries.append(how)

    def unknown(self, op_id: str, how: str) -> None:
        """A try with no definite answer; an op accepted before stays accepted."""
        self.ops[op_id].tries.append(how)

    def worker_gone(self, worker_id: str) -> None:
        """A worker was killed, or stopped without finishing its jobs: they may run again."""
        self.workers_gone.add(worker_id)

    def disrupted(self, what: str) -> None:
        """Something that may make any job run again happened (a NATS outage, say)."""
        self.disruptions.append(what)

    def of(self, outcome: Outcome) -> list[Op]:
        return [op for op in self.ops.values() if op.outcome is outcome]


@dataclass
class JobTrace:
    """Everything the log holds for one job id, in log order."""

    job_id: str
    messages: list[StoredEvent] = field(default_factory=list)

    @property
    def state(self) -> JobState | None:
        return fold_history(self.messages)

    @property
    def creation(self) -> JobSpec | None:
        return next((m.event for m in self.messages if isinstance(m.event, JobSpec)), None)

    @property
    def starts(self) -> list[Started]:
        return [m.event for m in self.messages if isinstance(m.event, Started)]

    @property
    def op_marker(self) -> str | None:
        creation = self.creation
        marker = creation.payload.get(OP_MARKER) if creation is not None else None
        return marker if isinstance(marker, str) else None

    def kinds(self) -> list[str]:
        return [m.subject.rsplit(".", 1)[-1] for m in self.messages]


@dataclass
class StoreSnapshot:
    """The read store's view, read in one transaction."""

    checkpoint: int
    rows: dict[str, JobState]
    timeline: dict[str, list[int]]
    """Stream sequences in ``job_events`` per job id ('' for messages naming no job)."""


@dataclass
class Observation:
    """What the system did: the log, the dead letters, and optionally the read store."""

    jobs: dict[str, JobTrace]
    last_seq: int
    dead_letter_subjects: set[str] | None = None
    store: StoreSnapshot | None = None

    @classmethod
    def of(
        cls,
        messages: Iterable[StoredEvent],
        *,
        dead_letter_subjects: set[str] | None = None,
        store: StoreSnapshot | None = None,
    ) -> Observation:
        jobs: dict[str, JobTrace] = {}
        last = 0
        for stored in messages:
            job_id = attributed_job(stored)
            jobs.setdefault(job_id, JobTrace(job_id)).messages.append(stored)
            last = max(last, stored.seq)
        return cls(jobs, last, dead_letter_subjects, store)


def attributed_job(stored: StoredEvent) -> str:
    """The job a message belongs to, as the projector files it ('' if it names none)."""
    if stored.event is not None:
        return stored.event.job_id
    try:
        return parse_job_subject(stored.subject).job_id
    except ValueError:
        return ""


def outcome_of(state: JobState | None) -> str:
    """A job's outcome in the words ``Op.expect`` uses."""
    if state is None:
        return "absent"
    if state.status is JobStatus.FAILED:
        return "dead_lettered" if state.dead_lettered else "failed"
    if state.status is JobStatus.PENDING:
        return f"pending ({state.pending_reason})"
    return state.status.value


@dataclass
class Verdict:
    """The checker's findings; :meth:`assert_ok` fails the test on any anomaly."""

    lost: dict[str, str] = field(default_factory=dict)
    unexpected: dict[str, str] = field(default_factory=dict)
    rejected_but_ran: dict[str, str] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    unexplained_reruns: dict[str, list[str]] = field(default_factory=dict)
    store_mismatches: dict[str, list[str]] = field(default_factory=dict)
    missing_dead_letters: list[str] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    """Ops per client outcome (accepted / rejected / unknown)."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Final outcome of every job in the log."""
    runs_per_job: Counter[int] = field(default_factory=Counter)
    """How many jobs were started n times (at-least-once: n > 1 only after a fault)."""
    observed: Observation | None = field(default=None, repr=False)
    """What was checked, for a test's own assertions on top."""

    ANOMALIES = (
        "lost",
        "unexpected",
        "rejected_but_ran",
        "duplicated",
        "unexplained_reruns",
        "store_mismatches",
        "missing_dead_letters",
    )

    @property
    def anomalies(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.ANOMALIES if getattr(self, name)}

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def summary(self) -> str:
        stats = (
            f"ops {dict(self.ops)}; job outcomes {dict(self.outcomes)}; "
            f"runs per job {dict(sorted(self.runs_per_job.items()))}"
        )
        lines = [stats]
        for name, found in self.anomalies.items():
            items = list(found.items()) if isinstance(found, dict) else [(x, "") for x in found]
            lines.append(f"{name} ({len(items)}):")
            lines += [f"  {key}: {value}" for key, value in items[:20]]
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        assert self.ok, "history check failed:\n" + self.summary()


def check(history: History, observed: Observation) -> Verdict:
    """Compare what the clients learned with what the system did."""
    verdict = Verdict(observed=observed)
    verdict.ops.update(op.outcome.value for op in history.ops.values())
    op_jobs = _link(history, observed, verdict)
    for op in history.ops.values():
        jobs = op_jobs.get(op.op_id, [])
        if len(jobs) > 1 or op.other_job_ids:
            verdict.duplicated[op.op_id] = sorted({*jobs, *op.other_job_ids})
        if op.outcome is Outcome.REJECTED:
            for job_id in jobs:
                verdict.unexpected[job_id] = f"stored although op {op.op_id} was rejected"
                if observed.jobs[job_id].starts:
                    verdict.rejected_but_ran[job_id] = op.op_id
            continue
        if op.outcome is Outcome.ACCEPTED and op.job_id not in jobs:
            verdict.lost[op.op_id] = f"accepted as {op.job_id}, but that job is not in the log"
            continue
        for job_id in jobs:  # accepted, or unknown and stored after all: it must finish too
            outcome = outcome_of(observed.jobs[job_id].state)
            if outcome not in op.expect:
                verdict.lost[op.op_id] = (
                    f"job {job_id} ended {outcome}, expected {' or '.join(sorted(op.expect))}"
                )
    for trace in observed.jobs.values():
        verdict.outcomes[outcome_of(trace.state)] += 1
        verdict.runs_per_job[len(trace.starts)] += 1
        reruns = _unexplained_reruns(trace, history)
        if reruns:
            verdict.unexplained_reruns[trace.job_id] = reruns
    if observed.store is not None:
        verdict.store_mismatches = _store_mismatches(observed, observed.store)
    if observed.dead_letter_subjects is not None:
        verdict.missing_dead_letters = sorted(
            job_id
            for job_id, trace in observed.jobs.items()
            if (state := trace.state) is not None
            and state.dead_lettered
            and dlq_subject(state.queue, job_id) not in observed.dead_letter_subjects
        )
    return verdict


def _link(history: History, observed: Observation, verdict: Verdict) -> dict[str, list[str]]:
    """Which jobs each op made; jobs no op explains go to ``unexpected``."""
    by_job_id = {op.job_id: op.op_id for op in history.ops.values() if op.job_id is not None}
    op_jobs: dict[str, list[str]] = defaultdict(list)
    for job_id, trace in observed.jobs.items():
        op_id = by_job_id.get(job_id)
        if op_id is None and trace.op_marker in history.ops:
            op_id = trace.op_marker
        if op_id is None:
            verdict.unexpected[job_id] = f"no op made it (events: {', '.join(trace.kinds())})"
        else:
            op_jobs[op_id].append(job_id)
    return op_jobs


def _unexplained_reruns(trace: JobTrace, history: History) -> list[str]:
    """Starts after the first that no fault explains."""
    if history.disruptions:
        return []
    found: list[str] = []
    previous: Started | None = None
    retried: set[int] = set()
    redriven = False
    for stored in trace.messages:
        event = stored.event
        if isinstance(event, Failed) and event.retry_at is not None:
            retried.add(event.attempt)
        elif isinstance(event, Redriven):
            redriven = True
        elif isinstance(event, Started):
            if previous is not None and not (
                redriven or previous.attempt in retried or previous.worker in history.workers_gone
            ):
                found.append(
                    f"attempt {event.attempt} on {event.worker} after attempt "
                    f"{previous.attempt} on {previous.worker}"
                )
            previous, redriven = event, False
    return found


def _store_mismatches(observed: Observation, store: StoreSnapshot) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if store.checkpoint != observed.last_seq:
        found["(checkpoint)"] = [
            f"the store applied up to {store.checkpoint}, the log read ends at {observed.last_seq}"
        ]
    for job_id, trace in observed.jobs.items():
        problems: list[str] = []
        fresh, row = trace.state, store.rows.get(job_id)
        if fresh is None and row is not None:
            problems.append("a row for a job the log never created")
        elif fresh is not None and row is None:
            problems.append(f"no row (the log says {outcome_of(fresh)})")
        elif fresh is not None and row is not None and fresh != row:
            problems += [
                f"{name}: store {getattr(row, name)!r} != fold {getattr(fresh, name)!r}"
                for name in JobState.__dataclass_fields__
                if getattr(row, name) != getattr(fresh, name)
            ]
        seqs = [m.seq for m in trace.messages]
        if sorted(store.timeline.get(job_id, [])) != seqs:
            problems.append(f"timeline {store.timeline.get(job_id, [])} != log {seqs}")
        if problems:
            found[job_id] = problems
    for job_id in store.rows.keys() - observed.jobs.keys():
        found[job_id] = ["a row for a job the log does not have"]
    for job_id in store.timeline.keys() - observed.jobs.keys():
        found.setdefault(job_id, []).append("timeline rows for a job the log does not have")
    return found


# --- Reading what happened ---------------------------------------------------------------


async def read_log(nc: Client, last_seq: int, *, timeout: float = 10.0) -> list[StoredEvent]:
    """Every message of ``FQ_EVENTS`` up to ``last_seq``, in order (an ordered consumer)."""
    if last_seq == 0:
        return []
    sub = await nc.jetstream().subscribe(ALL_JOB_EVENTS, stream=EVENT_STREAM, ordered_consumer=True)
    found: list[StoredEvent] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except (TimeoutError, nats.errors.TimeoutError) as exc:
                raise AssertionError(
                    f"reading the log stalled after {len(found)} messages (of {last_seq})"
                ) from exc
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq > last_seq:
                return found
            found.append(StoredEvent.of(NatsDelivery.of(msg)))  # times as the projector reads them
            if seq == last_seq or meta.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()


async def dead_letter_subjects(nc: Client) -> set[str]:
    """The subjects holding at least one message in ``FQ_DLQ``."""
    info = await nc.jetstream().stream_info(DLQ_STREAM, subjects_filter="fq.dlq.>")
    return set(info.state.subjects or {})


def read_store(engine: Engine) -> StoreSnapshot:
    """The projector's checkpoint, ``jobs`` rows and timeline, from one read transaction."""
    with Session(engine) as session:
        checkpoint = queries.jobs_checkpoint(session)
        rows = {row.job_id: row.to_state() for row in session.exec(select(JobRow))}
        timeline: dict[str, list[int]] = defaultdict(list)
        for seq, job_id in session.exec(select(JobEventRow.seq, JobEventRow.job_id)):
            timeline[job_id].append(seq)
    return StoreSnapshot(checkpoint, rows, dict(timeline))


async def _last_seq(nc: Client) -> int:
    seq: int = (await nc.jetstream().stream_info(EVENT_STREAM)).state.last_seq
    return seq


async def observe(
    nc: Client, engine: Engine | None = None, *, timeout: float = 30.0
) -> Observation:
    """Read the log, the dead letters and (given ``engine``) the read store.

    With a store, first wait (up to ``timeout``) until the projector has applied the whole
    log, so both are read at one position; if it never catches up, the snapshot is taken
    anyway and :func:`check` reports the gap.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = await patiently(lambda: _last_seq(nc), deadline)
        store = await asyncio.to_thread(read_store, engine) if engine is not None else None
        if store is None or store.checkpoint == last or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)  # polling the projector's progress, bounded by the deadline
    messages = await patiently(lambda: read_log(nc, last), deadline + timeout)
    dead = await patiently(lambda: dead_letter_subjects(nc), deadline + timeout)
    return Observation.of(messages, dead_letter_subjects=dead, store=store)


async def settle(nc: Client, history: History, *, timeout: float) -> bool:
    """Wait until every accepted op's job shows a final event in the log (one it is expected
    to reach, or any terminal one), read cheaply from the stream's per-subject counts; False
    if that did not happen in ``timeout`` — then :func:`check` says which jobs are missing."""
    deadline = time.monotonic() + timeout
    waiting = {
        op.job_id: _TERMINAL_SUBJECTS | {_EXPECT_SUBJECT[e] for e in op.expect}
        for op in history.of(Outcome.ACCEPTED)
        if op.job_id is not None
    }
    while waiting:
        try:
            info = await patiently(
                lambda: nc.jetstream().stream_info(EVENT_STREAM, subjects_filter="fq.job.*.*.*"),
                deadline,
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return False
        seen: dict[str, set[str]] = defaultdict(set)
        for subject in info.state.subjects or {}:
            with contextlib.suppress(ValueError):  # a subject naming no job finishes none
                tokens = parse_job_subject(subject)
                seen[tokens.job_id].add(tokens.event)
        waiting = {job: kinds for job, kinds in waiting.items() if not kinds & seen[job]}
        if not waiting:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)  # polling the log, bounded by the deadline
    return True


async def verify(
    nc: Client, history: History, engine: Engine | None = None, *, timeout: float = 30.0
) -> Verdict:
    """Settle, observe and check: the last step of every fault test."""
    await settle(nc, history, timeout=timeout)
    return check(history, await observe(nc, engine, timeout=timeout))
