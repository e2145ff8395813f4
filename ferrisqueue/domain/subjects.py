"""The subject scheme of the event log.

Every lifecycle event of a job is published on ``fq.job.<queue>.<job_id>.<event>``:

* a job's whole history is ``fq.job.*.<job_id>.*`` (audit, ``nats stream view``);
* one event kind across all jobs is ``fq.job.*.*.<event>`` (for a runnable kind, with its
  nine lane tokens beside it: ``fq.job.*.*.submitted-p0``, ...);
* a queue's runnable events are ``fq.job.<queue>.*.submitted``, ``...released`` and
  ``...redriven``, the filter of that queue's dispatch consumer; a job of priority ``n``
  other than the default 5 has them in its *lane*: ``submitted-p<n>``, ``released-p<n>``,
  ``redriven-p<n>`` (one dispatch consumer per lane; docs/architecture.md "Priorities").

Time lives in its own stream, ``FQ_SCHEDULES`` (JetStream message schedules):

* ``fq.timer.<queue>.<job_id>``: a job's one pending timer (``@at``); it fires a message on
  ``fq.due.<queue>.<job_id>`` (``...<job_id>.p<n>`` in lane ``n``), which ``FQ_EVENTS``
  sources as ``fq.job.<queue>.<job_id>.released`` (``released-p<n>``);
* ``fq.cron.<name>``: a periodic schedule; each tick lands on ``fq.tick.<name>``, where the
  scheduler turns it into one job.

The subject is authoritative for the queue, the job id and the event kind; the JSON body
repeats them so a message copied elsewhere (a dead letter, an export) still describes itself.
"""

from __future__ import annotations

from typing import NamedTuple

from ferrisqueue.domain.ids import is_token

EVENT_STREAM = "FQ_EVENTS"
"""The Limits-retention stream that holds every lifecycle event: the source of truth."""

DLQ_STREAM = "FQ_DLQ"
"""Dead letters: the original runnable message of each job given up on."""

ADVISORY_STREAM = "FQ_ADVISORIES"
"""Captured MAX_DELIVERIES advisories of the dispatch consumers."""

SCHEDULE_STREAM = "FQ_SCHEDULES"
"""Timers of waiting jobs and cron schedules, fired by the server (``allow_msg_schedules``)."""

JOB_SUBJECT_PREFIX = "fq.job"
ALL_JOB_EVENTS = f"{JOB_SUBJECT_PREFIX}.>"
RUNNABLE_EVENTS = ("submitted", "released", "redriven")

DEFAULT_PRIORITY = 5
"""The priority of a job that names none; its runnable events keep the plain subjects."""
PRIORITIES = range(10)
"""Valid priorities, lowest first; higher runs first."""
LANES = tuple(reversed(PRIORITIES))
"""Lanes in the order a worker serves them: highest first."""
OTHER_LANES = tuple(lane for lane in LANES if lane != DEFAULT_PRIORITY)
"""The lanes with subjects and consumers of their own."""
_LANE_MARK = "-p"


class JobSubject(NamedTuple):
    """The three tokens a job-event subject carries."""

    queue: str
    job_id: str
    event: str


def job_subject(queue: str, job_id: str, event: str) -> str:
    """The subject of one event of one job."""
    return f"{JOB_SUBJECT_PREFIX}.{queue}.{job_id}.{event}"


def parse_job_subject(subject: str) -> JobSubject:
    """Split a job-event subject into its tokens; ``ValueError`` if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or ".".join(parts[:2]) != JOB_SUBJECT_PREFIX:
        raise ValueError(
            f"{subject!r} is not a job event subject (fq.job.<queue>.<job_id>.<event>)"
        )
    queue, job_id, event = parts[2:]
    for name, token in (("queue", queue), ("job id", job_id), ("event", event)):
        if not is_token(token):
            raise ValueError(
                f"{name} {token!r} in {subject!r} is not a valid token ([A-Za-z0-9_-]{{1,64}})"
            )
    return JobSubject(queue, job_id, event)


def runnable_token(kind: str, priority: int = DEFAULT_PRIORITY) -> str:
    """The last subject token of a runnable event in lane ``priority``: the kind itself in
    the default lane, ``<kind>-p<n>`` in any other."""
    return kind if priority == DEFAULT_PRIORITY else f"{kind}{_LANE_MARK}{priority}"


def split_event_token(token: str) -> tuple[str, int | None]:
    """The event kind and lane a subject's last token names: ``("submitted", 9)`` for
    ``submitted-p9``, ``("submitted", 5)`` for ``submitted``, ``(token, None)`` for a kind
    that has no lane (``started``, ...). An unknown lane (``submitted-p12``) stays as given,
    an unknown kind, so decoding refuses it."""
    kind, mark, lane = token.rpartition(_LANE_MARK)
    # "submitted-p5" is no lane's name: the default lane keeps the plain kind.
    if mark and kind in RUNNABLE_EVENTS and lane in {str(n) for n in OTHER_LANES}:
        return kind, int(lane)
    if token in RUNNABLE_EVENTS:
        return token, DEFAULT_PRIORITY
    return token, None


def lane_notices(queue: str) -> list[str]:
    """The subjects on which a queue's non-default lanes get work by a publish (a submit or
    a redrive; a fired timer is sourced into the log, never published): what a worker
    listens to, to learn at once that a lane has work."""
    return [
        job_subject(queue, "*", runnable_token(kind, lane))
        for lane in OTHER_LANES
        for kind in ("submitted", "redriven")
    ]


def job_history_filter(job_id: str) -> str:
    """The filter that selects every event of one job, whatever its queue."""
    return f"{JOB_SUBJECT_PREFIX}.*.{job_id}.*"


def runnable_filters(queue: str, priority: int = DEFAULT_PRIORITY) -> list[str]:
    """The filter subjects of a queue's dispatch consumer for lane ``priority``."""
    return [job_subject(queue, "*", runnable_token(kind, priority)) for kind in RUNNABLE_EVENTS]


def dlq_subject(queue: str, job_id: str) -> str:
    """Where a job's dead letter is kept."""
    return f"fq.dlq.{queue}.{job_id}"


def timer_subject(queue: str, job_id: str) -> str:
    """The subject of a job's pending timer; purging it cancels the timer."""
    return f"fq.timer.{queue}.{job_id}"


def due_subject(queue: str, job_id: str, priority: int = DEFAULT_PRIORITY) -> str:
    """Where a job's timer fires; ``FQ_EVENTS`` stores it as the job's ``released`` event
    in the job's lane (one subject transform per lane)."""
    lane = "" if priority == DEFAULT_PRIORITY else f".p{priority}"
    return f"fq.due.{queue}.{job_id}{lane}"


def cron_subject(name: str) -> str:
    """The subject of a periodic schedule (one message: the server's schedule)."""
    return f"fq.cron.{name}"


def tick_subject(name: str) -> str:
    """Where each tick of a periodic schedule lands."""
    return f"fq.tick.{name}"


def subject_matches(subject: str, pattern: str) -> bool:
    """Whether ``subject`` matches the NATS subject ``pattern`` (``*`` one token, ``>`` the
    rest: one or more tokens)."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or token not in ("*", tokens[index]):
            return False
    return len(tokens) == len(wanted)
