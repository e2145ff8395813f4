"""The Dramatiq actors the benchmark's workers load (``dramatiq bench.peers.dramatiq_app``).

Redis broker with the run's prefix as its namespace (every key it writes starts with it).
Dramatiq acks a message after the actor returned (its default).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers.common import REDIS_URL, done, prefix

broker = RedisBroker(url=REDIS_URL, namespace=prefix())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="noop", max_retries=0)  # type: ignore[untyped-decorator, unused-ignore]
def noop() -> None:
    """The no-op job."""
    done()
