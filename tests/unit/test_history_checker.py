"""The fault tests' history checker, on hand-made histories: it must be able to fail."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ferrisqueue.domain.events import (
    BaseEvent,
    Canceled,
    DeadLettered,
    Failed,
    Started,
    Submitted,
    Succeeded,
    encode_event,
)
from ferrisqueue.domain.stored import StoredEvent
from tests.support.history import (
    History,
    Observation,
    Outcome,
    StoreSnapshot,
    check,
    outcome_of,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Log:
    """A hand-made event log: events get consecutive stream sequences."""

    def __init__(self) -> None:
        self.messages: list[StoredEvent] = []

    def _add(self, event: BaseEvent) -> None:
        seq = len(self.messages) + 1
        self.messages.append(
            StoredEvent.decode(seq, event.subject, encode_event(event), T0 + timedelta(seconds=seq))
        )

    def raw(self, subject: str, data: bytes) -> None:
        seq = len(self.messages) + 1
        self.messages.append(StoredEvent.decode(seq, subject, data, T0))

    def at(self) -> datetime:
        return T0 + timedelta(seconds=len(self.messages) + 1)

    def submitted(self, job_id: str, op: str | None = None) -> None:
        payload = {"op": op} if op else {}
        self._add(Submitted(job_id=job_id, queue="q", at=self.at(), type="echo", payload=payload))

    def started(self, job_id: str, attempt: int = 1, worker: str = "w1") -> None:
        self._add(Started(job_id=job_id, queue="q", at=self.at(), attempt=attempt, worker=worker))

    def succeeded(self, job_id: str, attempt: int = 1) -> None:
        self._add(
            Succeeded(job_id=job_id, queue="q", at=self.at(), attempt=attempt, duration_ms=1.0)
        )

    def failed(self, job_id: str, attempt: int = 1, *, retry: bool = False) -> None:
        self._add(
            Failed(
                job_id=job_id,
                queue="q",
                at=self.at(),
                attempt=attempt,
                error="boom",
                error_type="error:RuntimeError",
                retry_at=self.at() + timedelta(seconds=1) if retry else None,
            )
        )

    def dead_lettered(self, job_id: str) -> None:
        self._add(DeadLettered(job_id=job_id, queue="q", at=self.at(), reason="bad"))

    def canceled(self, job_id: str) -> None:
        self._add(Canceled(job_id=job_id, queue="q", at=self.at()))

    def run(self, job_id: str, op: str | None = None) -> None:
        """A job submitted, started once and completed."""
        self.submitted(job_id, op)
        self.started(job_id)
        self.succeeded(job_id)

    def observe(self, **kwargs: Any) -> Observation:
        return Observation.of(self.messages, **kwargs)

    def store(self) -> StoreSnapshot:
        """What a correct projector would hold for this log."""
        observed = self.observe()
        rows = {j: s for j, t in observed.jobs.items() if (s := t.state) is not None}
        timeline = {j: [m.seq for m in t.messages] for j, t in observed.jobs.items()}
        return StoreSnapshot(observed.last_seq, rows, timeline)


def accepted(history: History, op: str, job_id: str, **kwargs: Any) -> None:
    history.invoke(op, **kwargs)
    history.accepted(op, job_id)


def test_a_clean_history_passes_with_its_statistics() -> None:
    log, history = Log(), History()
    for n in range(3):
        accepted(history, f"op{n}", f"job{n}")
        log.run(f"job{n}", f"op{n}")

    verdict = check(history, log.observe(store=log.store(), dead_letter_subjects=set()))

    verdict.assert_ok()
    assert verdict.ops == {"accepted": 3}
    assert verdict.outcomes == {"completed": 3}
    assert verdict.runs_per_job == {1: 3}


def test_an_accepted_job_missing_from_the_log_is_lost() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")

    verdict = check(history, log.observe())

    assert verdict.lost == {"op1": "accepted as job1, but that job is not in the log"}
    with pytest.raises(AssertionError, match="lost"):
        verdict.assert_ok()


def test_an_accepted_job_that_never_finished_is_lost() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")
    log.submitted("job1", "op1")
    log.started("job1")

    verdict = check(history, log.observe())

    assert verdict.lost == {"op1": "job job1 ended running, expected completed"}


def test_a_job_in_an_unexpected_final_state_is_lost() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1", expect=["completed"])
    accepted(history, "op2", "job2", expect=["dead_lettered"])
    log.submitted("job1", "op1")
    log.started("job1")
    log.failed("job1")
    log.dead_lettered("job1")
    log.run("job2", "op2")

    verdict = check(history, log.observe())

    assert set(verdict.lost) == {"op1", "op2"}
    assert "ended dead_lettered" in verdict.lost["op1"]
    assert "ended completed, expected dead_lettered" in verdict.lost["op2"]


def test_a_job_nobody_submitted_is_unexpected() -> None:
    log, history = Log(), History()
    log.run("ghost")

    verdict = check(history, log.observe())

    assert verdict.unexpected == {"ghost": "no op made it (events: submitted, started, succeeded)"}


def test_the_job_of_an_unknown_op_is_expected_and_linked_by_its_op_marker() -> None:
    """A 503 whose request was stored after all: the client never learned the job id."""
    log, history = Log(), History()
    history.invoke("op1")
    history.unknown("op1", "503")
    log.run("job1", "op1")

    verdict = check(history, log.observe())

    verdict.assert_ok()
    assert verdict.ops == {"unknown": 1}


def test_an_unknown_op_whose_job_was_stored_must_still_finish() -> None:
    log, history = Log(), History()
    history.invoke("op1")
    history.unknown("op1", "timeout")
    log.submitted("job1", "op1")

    verdict = check(history, log.observe())

    assert verdict.lost == {"op1": "job job1 ended pending (queued), expected completed"}


def test_an_unknown_op_resolved_by_a_retry_is_accepted() -> None:
    history = History()
    history.invoke("op1")
    history.unknown("op1", "503")
    history.accepted("op1", "job1")

    assert history.ops["op1"].outcome is Outcome.ACCEPTED
    assert history.ops["op1"].tries == ["503", "202"]


def test_a_rejected_op_that_was_stored_and_ran_is_reported() -> None:
    log, history = Log(), History()
    history.invoke("op1", job_id="job1")
    history.rejected("op1", "413")
    history.invoke("op2")
    history.rejected("op2", "422")
    log.run("job1")
    log.submitted("job2", "op2")

    verdict = check(history, log.observe())

    assert verdict.rejected_but_ran == {"job1": "op1"}
    assert set(verdict.unexpected) == {"job1", "job2"}


def test_one_op_that_became_two_jobs_is_a_duplicate() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")
    log.run("job1", "op1")
    log.run("job2", "op1")  # a retry without its idempotency key

    verdict = check(history, log.observe())

    assert verdict.duplicated == {"op1": ["job1", "job2"]}


def test_one_key_answered_with_two_job_ids_is_a_duplicate() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")
    history.accepted("op1", "job2")  # a concurrent try of the same key got another job
    log.run("job1", "op1")

    verdict = check(history, log.observe())

    assert verdict.duplicated == {"op1": ["job1", "job2"]}
    assert history.ops["op1"].job_id == "job1"


def test_a_rerun_needs_a_fault_to_explain_it() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")
    log.submitted("job1", "op1")
    log.started("job1", 1, "w1")
    log.started("job1", 2, "w2")
    log.succeeded("job1", 2)

    unexplained = check(history, log.observe())
    history.worker_gone("w1")
    explained = check(history, log.observe())

    assert unexplained.unexplained_reruns == {"job1": ["attempt 2 on w2 after attempt 1 on w1"]}
    assert unexplained.runs_per_job == {2: 1}
    explained.assert_ok()


def test_a_retry_after_a_failure_or_a_disruption_explains_a_rerun() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1")
    accepted(history, "op2", "job2")
    log.submitted("job1", "op1")
    log.started("job1", 1)
    log.failed("job1", 1, retry=True)
    log.started("job1", 2)
    log.succeeded("job1", 2)
    log.submitted("job2", "op2")
    log.started("job2", 1)
    log.started("job2", 2)
    log.succeeded("job2", 2)

    before = check(history, log.observe())
    history.disrupted("nats outage")
    after = check(history, log.observe())

    assert list(before.unexplained_reruns) == ["job2"]
    after.assert_ok()


def test_a_read_store_that_differs_from_a_fresh_fold_is_reported() -> None:
    log, history = Log(), History()
    for n in range(3):
        accepted(history, f"op{n}", f"job{n}")
        log.run(f"job{n}", f"op{n}")
    good = log.store()
    twice = replace(good.rows["job0"], events_applied=4, attempts=2)  # an event applied twice
    bad = StoreSnapshot(
        good.checkpoint - 1,
        {**{k: v for k, v in good.rows.items() if k != "job1"}, "job0": twice, "stray": twice},
        {**good.timeline, "job2": [*good.timeline["job2"], 99]},
    )

    verdict = check(history, log.observe(store=bad))

    found = verdict.store_mismatches
    assert set(found) == {"(checkpoint)", "job0", "job1", "job2", "stray"}
    assert found["job0"] == ["attempts: store 2 != fold 1", "events_applied: store 4 != fold 3"]
    assert found["job1"] == ["no row (the log says completed)"]
    assert "timeline" in found["job2"][0]
    assert found["stray"] == ["a row for a job the log does not have"]


def test_a_dead_lettered_job_must_have_its_letter() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1", expect=["dead_lettered"])
    log.raw("fq.job.q.job1.submitted", b"{not json")
    log.dead_lettered("job1")

    missing = check(history, log.observe(dead_letter_subjects=set()))
    present = check(history, log.observe(dead_letter_subjects={"fq.dlq.q.job1"}))

    assert missing.missing_dead_letters == ["job1"]
    present.assert_ok()
    assert present.outcomes == {"dead_lettered": 1}


def test_canceled_jobs_and_outcome_names() -> None:
    log, history = Log(), History()
    accepted(history, "op1", "job1", expect=["canceled"])
    log.submitted("job1", "op1")
    log.canceled("job1")

    verdict = check(history, log.observe())

    verdict.assert_ok()
    assert verdict.runs_per_job == {0: 1}
    assert outcome_of(None) == "absent"


def test_expectations_must_name_final_outcomes() -> None:
    with pytest.raises(ValueError, match="subset"):
        History().invoke("op1", expect=["running"])
