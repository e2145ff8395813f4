"""What the log says about limits: how many jobs ran at once, and how fast they started."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from ferrisqueue.domain.events import Canceled, DeadLettered, Failed, JobSpec, Started, Succeeded
from tests.support.history import Observation

_ENDS = (Succeeded, Failed, Canceled, DeadLettered)


def most_running_at_once(
    observed: Observation, group: Callable[[JobSpec], str | None] = lambda _: ""
) -> dict[str, int]:
    """Per group of jobs (``group`` of a job's creation; None: not counted), the most jobs
    the log shows running at once: walking every event in log order, a job runs from its
    ``started`` to its outcome (a later ``started`` of a running job is a rerun, not one
    more)."""
    events = sorted(
        (stored.seq, job_id, stored.event)
        for job_id, trace in observed.jobs.items()
        for stored in trace.messages
        if stored.event is not None
    )
    groups = {
        job_id: group(trace.creation)
        for job_id, trace in observed.jobs.items()
        if trace.creation is not None
    }
    running: set[str] = set()
    now: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for _seq, job_id, event in events:
        name = groups.get(job_id)
        if name is None:
            continue
        if isinstance(event, Started) and job_id not in running:
            running.add(job_id)
            now[name] += 1
            most[name] = max(most[name], now[name])
        elif isinstance(event, _ENDS) and job_id in running:
            running.discard(job_id)
            now[name] -= 1
    return dict(most)


def starts_beyond_rate(starts: list[datetime], *, per_second: float, burst: int) -> list[str]:
    """Every window of consecutive starts that holds more than a token bucket allows:
    ``burst`` + ``per_second`` x its length (plus one start of slack for the clocks)."""
    times = sorted(starts)
    beyond = []
    for i, first in enumerate(times):
        for j in range(i + 1, len(times)):
            span = (times[j] - first).total_seconds()
            if j - i + 1 > burst + per_second * span + 1:
                beyond.append(f"{j - i + 1} starts in {span:.3f}s from {first.isoformat()}")
    return beyond
