"""The Celery app the benchmark's workers load (``celery -A bench.peers.celery_app worker``).

Configured from the environment the measuring process sets: the broker (Redis or RabbitMQ),
and a queue name unique to the run. ``acks_late``: a task is acknowledged after it ran, as
FerrisQueue acks after recording the outcome. No result backend (Celery's default).
"""

from __future__ import annotations

import os

from celery import Celery

from bench.peers.common import done, prefix

app = Celery("fqbench", broker=os.environ["BENCH_BROKER_URL"])
app.conf.update(
    task_default_queue=prefix(),
    task_acks_late=True,
    task_ignore_result=True,
    worker_enable_remote_control=False,  # no pidbox queue left behind
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    # Every Redis key of the run starts with the prefix, so cleaning up deletes only ours.
    broker_transport_options={"global_keyprefix": f"{prefix()}:"},
)


@app.task(name="noop")  # type: ignore[untyped-decorator, unused-ignore]
def noop() -> None:
    """The no-op job."""
    done()
