"""Celery on Redis or RabbitMQ: ``python -m bench.peers.celery_peer --broker redis|rabbitmq``."""

from __future__ import annotations

import os
import sys

from bench.peers import common


def main() -> None:
    args = common.options(__doc__ or "")
    url = {"redis": common.REDIS_URL, "rabbitmq": common.AMQP_URL}[args.broker]
    os.environ.update(BENCH_PREFIX=common.new_prefix("celery"), BENCH_BROKER_URL=url)
    from bench.peers.celery_app import app, noop  # configured from the environment above

    def enqueue() -> None:
        with app.producer_or_acquire() as producer:
            for _ in range(args.jobs):
                noop.apply_async(producer=producer)

    def cleanup() -> None:
        if args.broker == "redis":
            common_redis_cleanup(common.prefix())
        else:
            with app.connection_for_write() as conn:
                channel = conn.default_channel
                channel.queue_delete(common.prefix())
                channel.exchange_delete(common.prefix())

    argv = [sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", "worker"]
    argv += ["-Q", common.prefix(), "-c", str(args.workers), "-P", "prefork", "-l", "WARNING"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    common.emit(
        common.measure(
            f"celery-{args.broker}",
            jobs=args.jobs,
            enqueue=enqueue,
            worker_argv=argv,
            env={k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
            cleanup=cleanup,
        )
    )


def common_redis_cleanup(key_prefix: str) -> None:
    """Delete the run's keys, and only those (never FLUSHALL)."""
    import redis

    client = redis.Redis.from_url(common.REDIS_URL)
    keys = list(client.scan_iter(match=f"{key_prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    main()
