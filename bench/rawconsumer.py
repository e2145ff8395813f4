"""One raw JetStream consumer process for the baseline: ``fetch`` + ``ack`` in a loop.

``python -m bench.rawconsumer URL STREAM DURABLE [BATCH]`` binds to the durable pull
consumer, prints ``ready``, waits for a line on stdin (so that every process starts at
once), then fetches and acks until a fetch finds nothing for a second after the first
message; prints ``{"count", "first", "last"}`` (wall-clock times of the first message and
the last ack) as JSON and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import nats

IDLE = 1.0
GIVE_UP = 30.0
"""Seconds to wait for the first message before exiting with none."""


async def consume(url: str, stream: str, durable: str, batch: int) -> dict[str, float]:
    nc = await nats.connect(url, name="fq-bench-raw")
    try:
        sub = await nc.jetstream().pull_subscribe_bind(durable, stream=stream)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        count, first, last = 0, 0.0, 0.0
        began = time.monotonic()
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=IDLE)
            except TimeoutError:
                if count or time.monotonic() - began > GIVE_UP:
                    break
                continue
            if not count:
                first = time.time()
            for msg in msgs:
                await msg.ack()
            count += len(msgs)
            last = time.time()
        await nc.flush()
        return {"count": count, "first": first, "last": last}
    finally:
        await nc.close()


def main() -> None:
    url, stream, durable = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    print(json.dumps(asyncio.run(consume(url, stream, durable, batch))), flush=True)


if __name__ == "__main__":
    main()
