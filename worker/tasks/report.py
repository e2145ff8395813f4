"""The ``report`` task: read the jobs of a period from the read store, compute their
statistics and write the report files under the storage root.

The statistics and renderings are pure (:mod:`worker.reporting`); this module only
reads rows and writes files. The handler is a plain ``def``: the query and the PDF are
blocking work, so the registry runs it in a thread and the event loop keeps beating leases.

Idempotency: the files are ``<output_dir>/<job_id>.<format>``, each replaced atomically
(temporary file + ``os.replace``), so a job that runs again overwrites its own report and a
reader never sees half a file. A report without ``until`` covers "up to now", so a second run
may count a few more jobs than the first; give ``until`` for a reproducible report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlmodel import Session, col

from ferrisqueue.domain.events import utcnow
from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.report import ReportPayload, ReportResult, ReportTotals
from ferrisqueue.settings import Settings
from ferrisqueue.store.db import make_engine
from ferrisqueue.store.models import JobRow
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.reporting import JobFacts, compute_stats, render_csv, render_html, render_pdf
from worker.storage import atomic_writer, inside

_FETCH_BATCH = 2_000
"""Rows fetched from the read store at a time (the period may hold many jobs)."""


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``report`` jobs."""
    root = settings.effective_storage_root
    database_url = settings.effective_database_url

    def report(ctx: JobContext, payload: ReportPayload) -> ReportResult:
        since = payload.since.astimezone(UTC)
        until = (payload.until or utcnow()).astimezone(UTC)
        if since >= until:
            raise Permanent(
                f"since ({since.isoformat()}) is not before until ({until.isoformat()})"
            )
        # Check every path before the (possibly long) query, so a bad one fails fast.
        folder = PurePosixPath(payload.output_dir)
        paths = {fmt: (folder / f"{ctx.job_id}.{fmt}").as_posix() for fmt in payload.formats}
        targets = {fmt: inside(root, relative) for fmt, relative in paths.items()}

        engine = make_engine(database_url)
        try:
            with Session(engine) as session:
                stats = compute_stats(
                    load_job_facts(session, since, until, payload.queues),
                    since=since,
                    until=until,
                    queues=payload.queues,
                )
        finally:
            engine.dispose()

        generated_at = utcnow()
        steps = len(targets) + 1
        ctx.progress_from_thread(1 / steps, f"counted {stats.total} jobs")
        for done, (fmt, target) in enumerate(targets.items(), start=2):
            if fmt == "html":
                data = render_html(stats, generated_at=generated_at).encode()
            elif fmt == "csv":
                data = render_csv(stats).encode()
            else:
                data = render_pdf(stats, generated_at=generated_at)
            with atomic_writer(target) as file:
                file.write(data)
            ctx.progress_from_thread(done / steps, f"wrote {paths[fmt]}")

        return ReportResult(
            since=since,
            until=until,
            queues=payload.queues,
            artifacts=paths,
            totals=ReportTotals(jobs=stats.total, completed=stats.completed, failed=stats.failed),
        )

    registry.task("report")(report)


def load_job_facts(
    session: Session, since: datetime, until: datetime, queues: Sequence[str] | None
) -> Iterator[JobFacts]:
    """The facts of the jobs created in ``[since, until)``, streamed in batches."""
    query = select(
        col(JobRow.type),
        col(JobRow.status),
        col(JobRow.created_at),
        col(JobRow.started_at),
        col(JobRow.finished_at),
        col(JobRow.last_error),
    ).where(col(JobRow.created_at) >= since, col(JobRow.created_at) < until)
    if queues:
        query = query.where(col(JobRow.queue).in_(queues))
    for type_, status, created_at, started_at, finished_at, last_error in session.execute(
        query.execution_options(yield_per=_FETCH_BATCH)
    ):
        yield JobFacts(type_, status, created_at, started_at, finished_at, last_error)
