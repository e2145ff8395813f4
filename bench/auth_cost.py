"""What gateway authentication costs per request: ``python -m bench.auth_cost [N]``.

On a throw-away system (embedded nats-server, a real uvicorn gateway per mode), N sequential
``POST /jobs`` on one keep-alive connection each with: auth off; auth on and a key without
a rate limit (a dict lookup and a SHA-256 in the gateway); auth on and a key with a limit
high enough never to refuse (plus the shared token bucket: a read and a guarded write of
``FQ_RATELIMITS``). Also the token-bucket take alone, straight on NATS. Sequential on
purpose: the figures are per-request latency, not throughput. Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx

from bench.harness import System, check_alive, percentile, system, wait_until
from ferrisqueue.domain.principal import Scope
from ferrisqueue.log.keybook import KeyBook
from ferrisqueue.log.natslog import NatsLog
from ferrisqueue.log.ratelimits import RateLimits

JOB = {"type": "echo", "payload": {}}


async def _gateway(made: System, auth: str) -> None:
    proc = made.spawn("gateway", FQ_AUTH=auth)
    async with httpx.AsyncClient(base_url=made.gateway_url, timeout=2) as client:

        async def ready() -> int:
            check_alive(proc)
            try:
                return (await client.get("/readyz")).status_code
            except httpx.TransportError:
                return 0

        await wait_until(ready, lambda code: code == 200, within=30, what="gateway")


async def _posts(url: str, headers: dict[str, str], n: int) -> list[float]:
    took = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as client:
        for _ in range(20):  # warm up the connection and the gateway
            (await client.post("/jobs", json=JOB)).raise_for_status()
        for _ in range(n):
            start = time.perf_counter()
            (await client.post("/jobs", json=JOB)).raise_for_status()
            took.append(time.perf_counter() - start)
    return took


async def _mode(auth: str, rate: float | None, n: int) -> tuple[list[float], list[float]]:
    with system(metrics=False) as made:
        await made.topology()
        nc = await made.client()
        try:
            log = NatsLog(nc)
            _, key = await KeyBook(log).create("bench", frozenset({Scope.JOBS_WRITE}), rate=rate)
            await _gateway(made, auth)
            headers = {"Authorization": f"Bearer {key}"} if auth == "on" else {}
            posts = await _posts(made.gateway_url, headers, n)
            takes: list[float] = []
            if rate is not None:
                limits = RateLimits(log)
                for _ in range(n):
                    start = time.perf_counter()
                    await limits.take("benchkey", 1, rate=1e9, capacity=10**9)
                    takes.append(time.perf_counter() - start)
            return posts, takes
        finally:
            await nc.close()


def _ms(values: list[float], q: float) -> str:
    found = percentile(values, q)
    return "-" if found is None else f"{found * 1000:.2f}"


async def main(n: int) -> None:
    print(f"| mode ({n} sequential POST /jobs) | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|")
    takes: list[float] = []
    for label, auth, rate in (
        ("auth off", "off", None),
        ("auth on, key without limit", "on", None),
        ("auth on, key with a rate limit", "on", 1e9),
    ):
        posts, took = await _mode(auth, rate, n)
        takes = took or takes
        mean = sum(posts) / len(posts) * 1000
        print(f"| {label} | {_ms(posts, 50)} | {_ms(posts, 99)} | {mean:.2f} |")
    mean = sum(takes) / len(takes) * 1000
    print(
        f"| token-bucket take alone (read + guarded write) | {_ms(takes, 50)} | "
        f"{_ms(takes, 99)} | {mean:.2f} |"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
