"""Concurrency and rate limits as a worker obeys them: admission before a job's ``started``.

A delivered job of a limited queue must pass each of its scopes
(:func:`~ferrisqueue.domain.limits.scopes_for`): a slot of its key's and of its queue's slot
table (:class:`~ferrisqueue.log.slots.SlotBook`), then a token of its key's and of its
queue's bucket (:class:`~ferrisqueue.log.ratelimits.RateLimits`). Until it passes, the
worker **holds the message**: its lease is kept with ``in_progress()`` like a running job's,
so it is neither redelivered nor counted against MaxDeliver (a ``nak(delay=…)`` would count
a delivery per wait and dead-letter a job that merely waited its turn). The first time a
job waits for a reason, the executor records one ``throttled`` event with it (the job's
``pending_reason``); waiting longer records nothing more.

Waiting costs little: the jobs of one scope wait in line in each worker (one asks the KV
bucket at a time), asking again after 50 ms doubling to 1 s, or at once when a job of this
worker gives a slot of that scope back; a rate wait sleeps exactly until the next token.

Crash safety: a slot is a lease of ``ttl`` = the queue's AckWait, renewed every ``ttl / 3``
while the job runs (one write per scope for all the worker's jobs in it) and given back
when it ends. A SIGKILLed worker renews nothing: its slots expire when its jobs' leases do,
just as JetStream redelivers them. Expiry is judged by each worker's wall clock, so the
workers' clocks must agree to well within an AckWait (NTP).

A queue without limits costs nothing here: the executor asks :meth:`Admission.scopes` (a
dict lookup) and goes straight to ``started``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from ferrisqueue.domain.limits import LimitKind, QueueLimits, Scope, scopes_for
from ferrisqueue.log.port import LogPort
from ferrisqueue.log.ratelimits import RateLimits
from ferrisqueue.log.slots import SlotBook

log = logging.getLogger(__name__)

FIRST_POLL = 0.05
MAX_POLL = 1.0

OnWait = Callable[[LimitKind, str], Awaitable[None]]
"""Told once per reason a job waits for: the kind and which limit, for people."""
_Waiting = Callable[[Scope, str], Awaitable[None]]


@dataclass(slots=True)
class Permit:
    """The slots one job holds; give them back with :meth:`Admission.release`."""

    holder: str
    slots: list[Scope] = field(default_factory=list)


@dataclass(slots=True)
class _Line:
    """The jobs of this worker waiting for one scope: one asks the bucket at a time."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a job of this worker gives a slot of the scope back."""
    users: int = 0


class Admission:
    """One worker's side of the shared limits."""

    def __init__(self, log_port: LogPort, limits: Callable[[str], QueueLimits]) -> None:
        self._limits = limits
        self._slots = SlotBook(log_port)
        self._rates = RateLimits(log_port)
        self._lines: dict[str, _Line] = {}
        """Scope key -> its line, while a job of this worker waits for or takes it (so
        the map does not grow with every key ever seen)."""
        self._held: dict[str, _Held] = {}
        """Scope key -> the job ids holding a slot of it here: what to renew, and when."""
        self._new_scope = asyncio.Event()

    def scopes(self, queue: str, key: str | None) -> list[Scope]:
        """The limits a job of ``queue`` with ``concurrency_key`` ``key`` must pass now."""
        limits = self._limits(queue)
        return [] if limits.unlimited else scopes_for(queue, key, limits)

    async def admit(self, holder: str, scopes: list[Scope], ttl: float, on_wait: OnWait) -> Permit:
        """Wait until ``holder`` (a job id) passes every scope; the slots it took."""
        permit = Permit(holder)
        told: set[LimitKind] = set()

        async def waiting(scope: Scope, detail: str) -> None:
            if scope.kind not in told:
                told.add(scope.kind)
                await on_wait(scope.kind, f"{scope.name}: {detail}")

        try:
            for scope in scopes:
                async with self._in_line(scope.key) as freed:
                    if scope.kind is LimitKind.CONCURRENCY:
                        await self._claim(scope, holder, ttl, freed, waiting)
                        permit.slots.append(scope)
                        self._hold(scope.key, holder, ttl)
                    else:
                        await self._take(scope, waiting)
        except BaseException:
            await self.release(permit)
            raise
        return permit

    @contextlib.asynccontextmanager
    async def _in_line(self, key: str) -> AsyncIterator[asyncio.Event]:
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        line.users += 1
        try:
            async with line.lock:
                yield line.freed
        finally:
            line.users -= 1
            if not line.users:
                del self._lines[key]

    async def _claim(
        self, scope: Scope, holder: str, ttl: float, freed: asyncio.Event, waiting: _Waiting
    ) -> None:
        poll = FIRST_POLL
        while True:
            freed.clear()
            if await self._slots.claim(scope.key, holder, slots=scope.slots, ttl=ttl) is not None:
                return
            await waiting(scope, f"{scope.slots} of {scope.slots} running")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), poll)
            poll = min(MAX_POLL, poll * 2)

    async def _take(self, scope: Scope, waiting: _Waiting) -> None:
        assert scope.rate is not None
        while True:
            decision = await self._rates.take(
                scope.key, 1, rate=scope.rate.per_second, capacity=scope.rate.capacity
            )
            if decision.allowed:
                return
            await waiting(scope, f"{scope.rate} starts")
            await asyncio.sleep(decision.wait)

    async def release(self, permit: Permit) -> None:
        """Give back ``permit``'s slots (a failure is logged: the lease will expire)."""
        for scope in reversed(permit.slots):
            if (held := self._held.get(scope.key)) is not None:
                held.mine.discard(permit.holder)
                if not held.mine:
                    del self._held[scope.key]
            try:
                await self._slots.release(scope.key, permit.holder)
            except Exception as exc:
                log.warning("could not give back a slot of %s (it expires): %r", scope.key, exc)
            if (line := self._lines.get(scope.key)) is not None:
                line.freed.set()
        permit.slots.clear()

    def _hold(self, key: str, holder: str, ttl: float) -> None:
        held = self._held.get(key)
        if held is None:
            due = asyncio.get_running_loop().time() + ttl / 3
            held = self._held[key] = _Held(ttl, set(), due)
            self._new_scope.set()  # it may fall due before the renewer's next wake-up
        held.mine.add(holder)

    async def run(self) -> None:
        """Renew this worker's slot leases, each scope every third of its ttl (one write
        for all its holders here), until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for key, held in list(self._held.items()):
                if held.due > now:
                    continue
                held.due = now + held.ttl / 3
                try:
                    # The live set: a slot given back meanwhile is not renewed (the write
                    # is a compare-and-set, so a release in between makes it decide again).
                    await self._slots.renew(key, held.mine, ttl=held.ttl)
                except Exception as exc:  # the next renewal may land before the lease ends
                    log.warning("could not renew the slots of %s: %r", key, exc)
            self._new_scope.clear()
            wake = min((held.due for held in self._held.values()), default=now + 60)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_scope.wait(), max(0.0, wake - loop.time()))


@dataclass(slots=True)
class _Held:
    ttl: float
    mine: set[str]
    due: float
    """Loop time of the next renewal."""
