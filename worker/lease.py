"""Keeping jobs leased while their handlers run.

AckWait is the lease (the visibility timeout): a job whose worker neither acks nor
heartbeats within AckWait is delivered again, to any worker. ``in_progress()`` restarts the
full AckWait, so heartbeating every AckWait/3 keeps a long job leased through two lost
heartbeats. A worker that dies stops heartbeating, and its job comes back after AckWait.

One :class:`LeaseKeeper` task per worker heartbeats all of its running jobs, rather than one
task per job: most jobs end long before their first heartbeat is due, and a task created
and cancelled per job cost about 7 % of a worker's CPU on short jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ferrisqueue.log.port import Delivery

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Lease:
    msg: Delivery
    period: float
    due: float
    """Loop time of the next heartbeat."""


class LeaseKeeper:
    """Heartbeats every held message each ``ack_wait / 3`` seconds, from one task."""

    def __init__(self) -> None:
        self._leases: dict[int, _Lease] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._next_due = float("inf")
        """When :meth:`run` wakes up next, if nothing earlier is added."""

    @property
    def held(self) -> int:
        return len(self._leases)

    @contextlib.contextmanager
    def hold(self, msg: Delivery, ack_wait: float) -> Iterator[None]:
        """Keep ``msg`` leased for as long as the block runs (while :meth:`run` runs)."""
        period = ack_wait / 3
        lease = _Lease(msg, period, asyncio.get_running_loop().time() + period)
        key = next(self._ids)
        self._leases[key] = lease
        if lease.due < self._next_due:
            self._wake.set()  # a shorter lease than any held so far (another queue's)
        try:
            yield
        finally:
            del self._leases[key]

    async def run(self) -> None:
        """Heartbeat the held messages as they fall due, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            due = [key for key, lease in self._leases.items() if lease.due <= now]
            for key in due:
                self._leases[key].due = now + self._leases[key].period
            for key in due:
                # A job may end while an earlier heartbeat is being sent: skip it then.
                if (lease := self._leases.get(key)) is not None:
                    await _beat(lease.msg)
            self._next_due = min((lease.due for lease in self._leases.values()), default=now + 60)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, self._next_due - loop.time()))


async def _beat(msg: Delivery) -> None:
    try:
        await msg.in_progress()
    except Exception as exc:  # a lost heartbeat is survivable; the next one may land
        log.warning("heartbeat for %s failed: %s", msg.subject, exc)
