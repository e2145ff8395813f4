"""The taskiq broker the benchmark's workers load (``taskiq worker bench.peers.taskiq_app:broker``).

``BENCH_BROKER=redis``: taskiq-redis ``RedisStreamBroker`` (acknowledged messages) on a
stream named after the run. ``BENCH_BROKER=nats``: taskiq-nats ``PullBasedJetStreamBroker``
on FerrisQueue's embedded nats-server, a stream and durable consumer named after the run,
fetching ``BENCH_NATS_BATCH`` messages per pull: 1 is the library's default (documented
setup), 100 the Redis broker's default ``xread_count``. taskiq acks after the task ran.
"""

from __future__ import annotations

import os

from taskiq import AsyncBroker

from bench.peers.common import REDIS_URL, done, prefix


def _broker() -> AsyncBroker:
    if os.environ["BENCH_BROKER"] == "nats":
        from taskiq_nats import PullBasedJetStreamBroker

        return PullBasedJetStreamBroker(
            servers=[os.environ["BENCH_NATS_URL"]],
            subject=prefix(),
            stream_name=prefix(),
            durable=prefix(),
            pull_consume_batch=int(os.environ.get("BENCH_NATS_BATCH", "1")),
        )
    from taskiq_redis import RedisStreamBroker

    # consumer_id "0": the group reads the stream from its start, so jobs enqueued before
    # the workers started are delivered.
    return RedisStreamBroker(
        url=REDIS_URL, queue_name=prefix(), consumer_group_name=prefix(), consumer_id="0"
    )


broker = _broker()


@broker.task(task_name="noop")  # type: ignore[untyped-decorator, unused-ignore]
async def noop() -> None:
    """The no-op job."""
    done()
