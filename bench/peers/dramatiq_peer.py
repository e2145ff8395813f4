"""Dramatiq on Redis: ``python -m bench.peers.dramatiq_peer --broker redis``."""

from __future__ import annotations

import os
import sys

from bench.peers import common
from bench.peers.celery_peer import common_redis_cleanup


def main() -> None:
    args = common.options(__doc__ or "")
    os.environ.update(BENCH_PREFIX=common.new_prefix("dramatiq"))
    from bench.peers.dramatiq_app import noop  # configured from the environment above

    def enqueue() -> None:
        for _ in range(args.jobs):
            noop.send()

    argv = [sys.executable, "-m", "dramatiq", "bench.peers.dramatiq_app"]
    argv += ["--processes", str(args.workers), "--queues", "noop"]
    common.emit(
        common.measure(
            "dramatiq-redis",
            jobs=args.jobs,
            enqueue=enqueue,
            worker_argv=argv,
            env={k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
            cleanup=lambda: common_redis_cleanup(common.prefix()),
        )
    )


if __name__ == "__main__":
    main()
