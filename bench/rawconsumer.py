"""One raw JetStream consumer process for the baseline: ``fetch`` + ``ack`` in a loop.

``python -m bench.rawconsumer URL STREAM DURABLE [BATCH [EVENTS_SUBJECT]]`` binds to the
durable pull consumer, prints ``ready``, waits for a line on stdin (so that every process
starts at once), then fetches and acks until a fetch finds nothing for a second after the
first message; prints ``{"count", "first", "last"}`` (wall-clock times of the first message
and the last ack) as JSON and exits.

With ``EVENTS_SUBJECT`` each message is handled with the messages a FerrisQueue job takes,
with nats-py's own ``publish_async`` and no FerrisQueue code: a ``started`` published under
the guard FerrisQueue uses (``Nats-Expected-Last-Subject-Sequence``) and an outcome, each
with a ``Nats-Msg-Id`` and its ack awaited (the whole fetched batch at once), then the ack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

IDLE = 1.0
GIVE_UP = 30.0
"""Seconds to wait for the first message before exiting with none."""


async def consume(
    url: str, stream: str, durable: str, batch: int, events: str | None
) -> dict[str, float]:
    nc = await nats.connect(url, name="fq-bench-raw")
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(durable, stream=stream)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        cpu_began = time.process_time()
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
            if events is not None:
                await asyncio.gather(*(_append(js, events, msg, "started") for msg in msgs))
                await asyncio.gather(*(_append(js, events, msg, "succeeded") for msg in msgs))
            for msg in msgs:
                await msg.ack()
            count += len(msgs)
            last = time.time()
        await nc.flush()
        return {
            "count": count,
            "first": first,
            "last": last,
            "cpu": time.process_time() - cpu_began,
        }
    finally:
        await nc.close()


async def _append(js: JetStreamContext, events: str, msg: Msg, kind: str) -> None:
    job = f"{events}.{msg.metadata.sequence.stream}"
    headers = {"Nats-Msg-Id": f"{job}:{kind}"}
    if kind == "started":  # the job's first event here: nothing stored on its subjects yet
        headers["Nats-Expected-Last-Subject-Sequence"] = "0"
        headers["Nats-Expected-Last-Subject-Sequence-Subject"] = f"{job}.*"
    await (await js.publish_async(f"{job}.{kind}", msg.data, headers=headers))


def main() -> None:
    url, stream, durable = sys.argv[1:4]
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 256
    events = sys.argv[5] if len(sys.argv) > 5 else None
    print(json.dumps(asyncio.run(consume(url, stream, durable, batch, events))), flush=True)


if __name__ == "__main__":
    main()
