"""taskiq on Redis or NATS: ``python -m bench.peers.taskiq_peer --broker redis|nats|nats-b100``
(``nats-b100``: 100 messages per pull instead of the default 1)."""

from __future__ import annotations

import asyncio
import os
import sys

from bench.peers import common
from bench.peers.celery_peer import common_redis_cleanup


def main() -> None:
    args = common.options(__doc__ or "")
    batch = "100" if args.broker == "nats-b100" else "1"
    kind = "nats" if args.broker.startswith("nats") else args.broker
    os.environ.update(
        BENCH_PREFIX=common.new_prefix("taskiq"), BENCH_BROKER=kind, BENCH_NATS_BATCH=batch
    )
    if kind == "nats":
        if not args.nats_url:
            raise SystemExit("--nats-url is needed for --broker nats")
        os.environ["BENCH_NATS_URL"] = args.nats_url
    from bench.peers.taskiq_app import broker, noop  # configured from the environment above

    async def enqueue_all() -> None:
        await broker.startup()
        try:
            for _ in range(args.jobs):
                await noop.kiq()
        finally:
            await broker.shutdown()

    def cleanup() -> None:
        if kind == "redis":
            common_redis_cleanup(common.prefix())
        else:
            asyncio.run(_delete_stream(args.nats_url, common.prefix()))

    argv = [sys.executable, "-m", "taskiq", "worker", "bench.peers.taskiq_app:broker"]
    argv += ["--workers", str(args.workers)]
    common.emit(
        common.measure(
            f"taskiq-{args.broker}",
            jobs=args.jobs,
            enqueue=lambda: asyncio.run(enqueue_all()),
            worker_argv=argv,
            env={k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
            cleanup=cleanup,
        )
    )


async def _delete_stream(url: str, name: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()


if __name__ == "__main__":
    main()
