"""Priority lanes: which of a queue's ten dispatch consumers the next pull request goes to.

A job of priority ``n`` is runnable in lane ``n`` (its ``submitted-p<n>``, ``released-p<n>``,
``redriven-p<n>``; the plain subjects in the default lane 5), and each lane has a durable
consumer of its own (docs/architecture.md, "Priorities"). A worker's queue loop pulls all of
them through one :class:`LaneArbiter`, which keeps two promises:

* **One pull request per queue at a time**, so a worker still never holds more jobs than it
  has slots: a lane's request is let out only once the previous one (of any lane) ended.
* **Strict priority.** Each request goes to the highest lane *believed* to have work. No
  aging: a steady flow of higher-priority work starves lower lanes while it lasts.

What is believed comes at no extra cost on the busy path:

* every delivery says how many messages its consumer still had after it (the pending count
  in its ack subject): a lane being drained is known to have more, or to be empty;
* a publish on a lane's ``submitted-p<n>`` / ``redriven-p<n>`` (a core NATS notice every
  worker of the queue gets) marks it as having work on every worker at once;
* a lane believed empty is *probed* every :data:`PROBE_EVERY` seconds
  (:data:`DEFAULT_PROBE_EVERY` for the default lane) with a
  ``no_wait`` request (answered at once), which finds what no notice announces: work in the
  default lane (no notices there, so an unprioritised queue costs its workers nothing more),
  a fired timer (sourced into the log, never published), a redelivery after AckWait.

Every lane is asked with ``no_wait`` (the messages there now, then 404 at once). When no lane
has work, the request *waits* on the default lane (:data:`IDLE_WAIT`, up to its expiry), so a
quiet unprioritised queue gets each job the moment it arrives, as before.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence

from ferrisqueue.domain.subjects import DEFAULT_PRIORITY, LANES, split_event_token
from ferrisqueue.log.port import Delivery

PROBE_EVERY = 1.0
"""Seconds between two ``no_wait`` looks at a lane believed empty (what announces itself by
no notice there is rare: a fired timer, a redelivery)."""
DEFAULT_PROBE_EVERY = 0.25
"""The same for the default lane, which has no notices at all: how long a default-priority
job may wait behind a backlog of lower priorities. (An idle worker waits on it anyway.)"""
IDLE_WAIT = -1
"""Not a lane: the request that waits on the default lane's consumer when no lane has work."""
WAYS = (*LANES, IDLE_WAIT)
"""Every way a request can go, each with a puller of its own."""


class LaneArbiter:
    """One queue's lanes on one worker (see the module's notes). ``take_slots`` waits for
    free slots and says how many were taken; ``give_back`` returns some."""

    def __init__(
        self,
        take_slots: Callable[[], Awaitable[int]],
        give_back: Callable[[int], None],
        *,
        probe_every: float = PROBE_EVERY,
        default_probe_every: float = DEFAULT_PROBE_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take_slots = take_slots
        self._give_back = give_back
        self._probe_every = {lane: probe_every for lane in LANES}
        self._probe_every[DEFAULT_PRIORITY] = default_probe_every
        self._clock = clock
        self._turns = {way: asyncio.Event() for way in WAYS}
        self.reset()

    def reset(self) -> None:
        """Forget what was believed (a new life of the queue loop): every lane is probed."""
        self.believed = dict.fromkeys(LANES, 0)
        """Messages each lane is believed to hold (a test signal, too)."""
        self._polled = dict.fromkeys(LANES, -math.inf)
        self._outstanding: int | None = None
        self._chosen: int | None = None
        for turn in self._turns.values():
            turn.clear()
        self._notices = 0
        self._decide()

    def choose(self) -> int:
        """Where the next request goes: the highest lane believed to have work, else the
        highest one due for a probe, else :data:`IDLE_WAIT` (a request that waits for work
        on the default lane)."""
        now = self._clock()
        for lane in LANES:
            if self.believed[lane] > 0 or now - self._polled[lane] >= self._probe_every[lane]:
                return lane
        return IDLE_WAIT

    async def take(self, lane: int) -> int:
        """A lane's (or :data:`IDLE_WAIT`'s) :data:`~ferrisqueue.log.port.RequestSize`:
        waits until it is its turn and slots are free; the slots to ask for."""
        while True:
            await self._my_turn(lane)
            self._outstanding = lane
            self._decide()
            notices = self._notices
            try:
                slots = await self._take_slots()
            except BaseException:
                self._end()
                raise
            # While it waited for slots, work may have come to a higher lane (only a notice
            # can say so: this is the one request that could have said anything else).
            if notices == self._notices or self.choose() == lane:
                self._polled[_lane(lane)] = self._clock()
                return slots
            self._give_back(slots)
            self._end()

    def unused(self, lane: int, slots: int) -> None:
        """A lane's :data:`~ferrisqueue.log.port.Unused`, at the end of each of its requests:
        a request that was not filled found the lane empty."""
        self._give_back(slots)
        if slots > 0:
            self.believed[_lane(lane)] = 0
        self._end()

    def delivered(self, lane: int, burst: Sequence[Delivery]) -> None:
        """What a burst says of its lane: the backlog its consumer had left after it."""
        left = burst[-1].backlog_after if burst else None
        self.believed[_lane(lane)] = 1 if left is None else left  # unknown: ask to learn

    def notice(self, subject: str) -> None:
        """A publish on a lane's notice subject (``fq.job.<q>.<id>.submitted-p9``): that
        lane has work."""
        _kind, lane = split_event_token(subject.rpartition(".")[2])
        if lane is not None and self.believed[lane] == 0:
            self.believed[lane] = 1
            self._notices += 1
            self._decide()

    async def _my_turn(self, lane: int) -> None:
        # Woken only by a decision: at the end of each request (which is when a probe that
        # came due meanwhile can go out), on a notice, and here.
        turn = self._turns[lane]
        while True:
            if self._outstanding is None:
                self._decide()
                if self._chosen == lane:
                    return
            await turn.wait()

    def _end(self) -> None:
        self._outstanding = None
        self._decide()

    def _decide(self) -> None:
        """Wake the lane whose turn it is (only it: ten waiters, one woken). Only the chosen
        lane's event is ever set."""
        chosen = None if self._outstanding is not None else self.choose()
        if chosen != self._chosen:
            if self._chosen is not None:
                self._turns[self._chosen].clear()
            if chosen is not None:
                self._turns[chosen].set()
            self._chosen = chosen


def _lane(way: int) -> int:
    """The lane a request went to: the idle wait is the default lane's."""
    return DEFAULT_PRIORITY if way == IDLE_WAIT else way
