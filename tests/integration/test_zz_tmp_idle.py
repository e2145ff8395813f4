from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
from nats.aio.client import Client

from ferrisqueue.log.eventlog import EventLog
from tests.conftest import StartService
from tests.fault.system import consuming
from tests.support.waits import collect_events


async def test_idle(
    event_log: EventLog, nc: Client, start: StartService, gateway: httpx.AsyncClient
) -> None:
    start("worker", FQ_WORKER_ID="w1")
    start("worker", FQ_WORKER_ID="w2")
    await consuming(nc, waiting=1)
    res = {5: [], 9: [], 0: []}
    for i in range(60):
        p = (5, 9, 0)[i % 3]
        await asyncio.sleep(0.137)
        a = await gateway.post("/jobs", json={"type": "echo", "priority": p})
        jid = a.json()["job_id"]
        st = await collect_events(nc, f"fq.job.default.{jid}.started", until=bool, timeout=10)
        sub = await collect_events(nc, f"fq.job.default.{jid}.>", until=bool, timeout=10)
        res[p].append(
            (
                datetime.fromisoformat(st[0]["at"]) - datetime.fromisoformat(sub[0]["at"])
            ).total_seconds()
            * 1000
        )
    for p, v in res.items():
        v.sort()
        print("IDLE p", p, "median", round(v[len(v) // 2]), "max", round(v[-1]))
