"""The plugin's worker middleware (entry point group ``ferrisqueue.middleware``).

* At worker start it opens the :class:`~fq_example_plugin.journal.Journal` and adds it to the
  worker's resources; at stop it closes it.
* Before each attempt it refuses a ``word_count`` text longer than
  ``FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS`` with ``Permanent``: the job fails at once, without
  retries, and the handler never runs.
* After each attempt, of any job type, it journals how the attempt ended.

Handlers and hooks may run more than once for one job (at-least-once delivery), so the
journal can hold two lines for one attempt; a reader keys them on ``job_id`` and ``attempt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferrisqueue.errors import Permanent
from ferrisqueue.settings import Settings
from fq_example_plugin.journal import Journal
from fq_example_plugin.settings import ExampleSettings
from worker.context import JobContext
from worker.middleware import AttemptOutcome, Middleware, WorkerInfo


class ExampleMiddleware(Middleware):
    """Journals every attempt and guards ``word_count`` against texts too long."""

    def __init__(self, settings: ExampleSettings, journal: Path) -> None:
        self.settings = settings
        self.journal_path = journal

    async def on_worker_start(self, worker: WorkerInfo) -> None:
        journal = worker.resources.add(Journal(self.journal_path))
        journal.write(event="opened", worker=worker.worker_id)

    async def on_worker_stop(self, worker: WorkerInfo) -> None:
        journal = worker.resources.get(Journal)
        journal.write(event="closed", worker=worker.worker_id)
        journal.close()
        worker.resources.remove(Journal)

    async def before_attempt(self, ctx: JobContext, payload: dict[str, Any]) -> None:
        text = payload.get("text")
        limit = self.settings.max_text_chars
        if ctx.type == "word_count" and isinstance(text, str) and len(text) > limit:
            # Permanent: this worker would refuse it on every attempt, so do not retry.
            raise Permanent(
                f"text of {len(text)} characters is over FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS ({limit})"
            )

    async def after_attempt(self, ctx: JobContext, outcome: AttemptOutcome) -> None:
        ctx.resource(Journal).write(
            event="attempt",
            job_id=ctx.job_id,
            type=ctx.type,
            attempt=ctx.attempt,
            status=outcome.status.value,
            will_retry=outcome.will_retry,
            error=None if outcome.error is None else str(outcome.error),
        )


def middleware(settings: Settings) -> ExampleMiddleware:
    """The entry point: called once at worker start with FerrisQueue's settings. Reading the
    plugin's own settings here is what makes a bad value stop the worker at start."""
    own = ExampleSettings.load()
    return ExampleMiddleware(own, own.journal or settings.var_dir / "example-plugin.jsonl")
