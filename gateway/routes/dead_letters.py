"""``/dead-letters``: list and inspect dead letters, redrive or purge them.

Listing reads the read store. Inspecting reads ``FQ_DLQ`` and the job's log; redrive and
purge decide each job on its log (:mod:`gateway.dead_letter_ops`), so a lagging read
store can only make a filter select a job that is then skipped, never act wrongly. All but
the listing need NATS: 503 with ``Retry-After`` while it is away.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Session

from ferrisqueue.domain.events import Token, UtcDatetime
from ferrisqueue.domain.principal import Scope
from ferrisqueue.domain.stored import fold_history
from ferrisqueue.store import queries
from ferrisqueue.store.queries import DeadLetterFilter
from gateway import dead_letter_ops
from gateway.dead_letter_ops import MAX_BATCH, DeadLetterQueue, Outcome
from gateway.dead_letter_schemas import (
    DeadLetterAction,
    DeadLetterActionResult,
    DeadLetterDetail,
    DeadLetterOut,
    DeadLetterPage,
    JobOutcomeOut,
)
from gateway.deps import ActorDep, Authorized, EventLogDep, SessionDep
from gateway.schemas import AUTH_ERRORS, BODY_ERRORS, Problem

router = APIRouter(prefix="/dead-letters", tags=["dead letters"], responses=AUTH_ERRORS)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "NATS is unreachable; retry later"}
}


async def get_dead_letter_queue(event_log: EventLogDep) -> DeadLetterQueue:
    return DeadLetterQueue(event_log)


DeadLetterQueueDep = Annotated[DeadLetterQueue, Depends(get_dead_letter_queue)]


@router.get(
    "",
    dependencies=[Authorized(Scope.JOBS_READ)],
    responses={422: {"description": "A malformed filter or cursor"}},
)
async def list_dead_letters(
    session: SessionDep,
    queue: Token | None = None,
    type: Token | None = None,
    reason: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Case-insensitive substring of the reason or of the last error",
        ),
    ] = None,
    since: Annotated[UtcDatetime | None, Query(description="Dead-lettered at or after")] = None,
    until: Annotated[UtcDatetime | None, Query(description="Dead-lettered before")] = None,
    include_resolved: Annotated[
        bool, Query(description="Also list the ones already redriven or purged")
    ] = False,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 100,
) -> DeadLetterPage:
    """Dead-lettered jobs from the read store, newest first, with cursor pagination."""
    selection = DeadLetterFilter(queue=queue, type=type, reason=reason, since=since, until=until)
    try:
        rows = await run_in_threadpool(
            queries.dead_letters,
            session,
            selection,
            include_resolved=include_resolved,
            after=cursor,
            limit=limit,
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    return DeadLetterPage(
        items=[DeadLetterOut.from_row(row) for row in rows],
        next_cursor=queries.dead_letter_cursor(rows[-1]) if len(rows) == limit else None,
    )


@router.get(
    "/{job_id}",
    dependencies=[Authorized(Scope.JOBS_READ)],
    responses={404: {"model": Problem}, **_UNAVAILABLE},
)
async def inspect_dead_letter(
    job_id: Token, event_log: EventLogDep, dlq: DeadLetterQueueDep
) -> DeadLetterDetail:
    """The job's message as ``FQ_DLQ`` keeps it (body, reason and lineage headers) and the
    job's status now, folded from the log. 404 when the job is not dead-lettered and
    ``FQ_DLQ`` holds nothing for it."""
    state = fold_history(await event_log.history(job_id))
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    message = await dlq.get(state.queue, job_id)
    if message is None and not state.dead_lettered:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} has no dead letter")
    return DeadLetterDetail.build(job_id, state.queue, state, message)


@router.post(
    "/redrive",
    dependencies=[Authorized(Scope.DLQ_ADMIN)],
    responses={**BODY_ERRORS, **_UNAVAILABLE},
)
async def redrive(
    body: DeadLetterAction,
    session: SessionDep,
    event_log: EventLogDep,
    dlq: DeadLetterQueueDep,
    actor: ActorDep,
) -> DeadLetterActionResult:
    """Send dead-lettered jobs back to their queues: each gets a ``redriven`` event naming
    the caller as its actor, runs again at once (attempt n + 1) and leaves ``FQ_DLQ``. Jobs
    that are not dead-lettered are skipped with the reason. A retry after a 503 is safe: jobs
    already redriven are skipped."""
    job_ids, more = await _select(session, body)
    outcomes = await dead_letter_ops.act(
        "redriven", event_log, dlq, job_ids, actor=actor, reason=body.reason
    )
    return _result("redrive", actor, outcomes, more)


@router.post(
    "/purge", dependencies=[Authorized(Scope.DLQ_ADMIN)], responses={**BODY_ERRORS, **_UNAVAILABLE}
)
async def purge(
    body: DeadLetterAction,
    session: SessionDep,
    event_log: EventLogDep,
    dlq: DeadLetterQueueDep,
    actor: ActorDep,
) -> DeadLetterActionResult:
    """Remove dead letters for good: each job gets a ``purged`` event naming the caller, stays
    ``failed`` and leaves ``FQ_DLQ`` (its history stays in the log). Jobs that are not
    dead-lettered are skipped with the reason."""
    job_ids, more = await _select(session, body)
    outcomes = await dead_letter_ops.act(
        "purged", event_log, dlq, job_ids, actor=actor, reason=body.reason
    )
    return _result("purge", actor, outcomes, more)


async def _select(session: Session, body: DeadLetterAction) -> tuple[list[str], bool]:
    """The job ids the body names, or the newest ``MAX_BATCH`` its filter selects, and
    whether the filter selects more than that."""
    if body.job_ids is not None:
        return list(dict.fromkeys(body.job_ids)), False
    assert body.filter is not None
    rows = await run_in_threadpool(
        queries.dead_letters, session, body.filter.to_filter(), limit=MAX_BATCH + 1
    )
    return [row.job_id for row in rows[:MAX_BATCH]], len(rows) > MAX_BATCH


def _result(
    action: Literal["redrive", "purge"], actor: str, outcomes: list[Outcome], more: bool
) -> DeadLetterActionResult:
    done = sum(1 for o in outcomes if o.outcome != "skipped")
    return DeadLetterActionResult(
        action=action,
        by=actor,
        selected=len(outcomes),
        done=done,
        skipped=len(outcomes) - done,
        more=more,
        results=[JobOutcomeOut.from_outcome(o) for o in outcomes],
    )
