"""What the log says about limits: how many jobs ran at once, and how fast they started."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

from ferrisqueue.domain.events import Failed, JobSpec, Started, Succeeded
from tests.support.history import Observation

_OUTCOMES = (Succeeded, Failed)


def most_running_at_once(
    observed: Observation, group: Callable[[JobSpec], str | None] = lambda _: ""
) -> dict[str, int]:
    """Per group of jobs (``group`` of a job's creation; None: not counted), the most
    attempts the log shows running at once: walking every event in log order, an attempt
    runs from its ``started`` to its outcome. An attempt the log never closes (its worker
    was killed) is not counted: its process was gone before anything else could start."""
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
    closed = {
        (job_id, event.attempt) for _seq, job_id, event in events if isinstance(event, _OUTCOMES)
    }
    running: set[tuple[str, int]] = set()
    now: Counter[str] = Counter()
    most: Counter[str] = Counter()
    for _seq, job_id, event in events:
        name = groups.get(job_id)
        if name is None:
            continue
        if isinstance(event, Started) and (job_id, event.attempt) in closed:
            running.add((job_id, event.attempt))
            now[name] += 1
            most[name] = max(most[name], now[name])
        elif isinstance(event, _OUTCOMES) and (job_id, event.attempt) in running:
            running.discard((job_id, event.attempt))
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
