"""In-memory stand-ins for a :class:`~ferrisqueue.log.service_loop.ConsumerLoop`'s consumer: a
delivered message that records how it was settled, and a source the test feeds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from ferrisqueue.log.port import Delivery


class FakeMsg(Delivery):
    """A delivery of the log port that records how it was settled (ack / nak / term)."""

    __slots__ = ("settled",)

    def __init__(self, subject: str, data: bytes = b"", *, seq: int = 1, deliveries: int = 1):
        stored_at = datetime.fromtimestamp(1_764_700_000, UTC)
        super().__init__(seq, deliveries, subject, data, None, stored_at)
        self.settled: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append(("nak", delay))

    async def term(self, reason: str | None = None) -> None:
        self.settled.append(("term", None))

    async def in_progress(self) -> None:
        self.settled.append(("in_progress", None))


class MemorySource:
    """Hands over what the test :meth:`put` one message per burst, as a consumer would."""

    def __init__(self) -> None:
        self._waiting: asyncio.Queue[FakeMsg] = asyncio.Queue()
        self._held: list[FakeMsg] = []
        self.started = 0

    def put(self, *msgs: FakeMsg) -> None:
        for msg in msgs:
            self._waiting.put_nowait(msg)

    async def start(self) -> None:
        self.started += 1

    async def bursts(
        self, stopping: asyncio.Event, *, request_size: Callable[[], Awaitable[int]]
    ) -> AsyncIterator[list[FakeMsg]]:
        while not stopping.is_set():
            taking = asyncio.ensure_future(self._waiting.get())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait((taking, stop), return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not taking.done():
                taking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await taking
                return
            if stopping.is_set():
                self._held.append(taking.result())  # arrived as we stop: never handed over
                return
            yield [taking.result()]

    async def stop(self) -> list[Delivery]:
        """What was put but never handed over."""
        left: list[Delivery] = [*self._held]
        self._held = []
        while not self._waiting.empty():
            left.append(self._waiting.get_nowait())
        return left
