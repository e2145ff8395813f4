"""Queue pause as a worker sees it: a gate in front of each queue's pull requests (and the
queue's limits, which :mod:`worker.limits` obeys, read along with it).

A paused queue's loop asks for no messages (its next pull request waits at
:meth:`QueueGates.open_for`), so the queue's jobs stay in the stream, undelivered: nothing
is nak'd, nothing burns MaxDeliver, and resuming simply lets the next pull request go out.
Jobs already running finish. A pull request already out when the pause arrives may still
deliver (it lasts at most ``PULLING.expires``): the worker logs ``queue <q> paused ...:
holding`` once its loop waits at the gate, and from then on starts none of that queue's jobs.

Where the state comes from: the newest event of the queue in ``FQ_CONTROLS``
(:class:`~ferrisqueue.log.queuebook.QueueBook`), read before the loops start (so a worker
started while its queue is paused never pulls), re-read at once when a queue event is
published (a plain NATS subscription, fast but best effort) and every ``REFRESH`` seconds
(which covers one missed while disconnected). A state is taken only if it is newer (by
stream sequence) than the one held, so a slow read never undoes a newer event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from ferrisqueue.domain.limits import QueueLimits
from ferrisqueue.domain.queuecontrol import QueueState, queue_subject
from ferrisqueue.log.port import LogPort
from ferrisqueue.log.queuebook import QueueBook

log = logging.getLogger(__name__)

REFRESH = 2.0
"""Seconds between re-reads of the queues' states (the fallback for a missed notice)."""
_NOTICE_RETRIES = 20
_NOTICE_WAIT = 0.05


class QueueGates:
    """The pause state of a worker's queues, and the gate each queue's loop waits at."""

    def __init__(self, log_port: LogPort, queues: Iterable[str]) -> None:
        self._book = QueueBook(log_port)
        self._log = log_port
        self._states = {q: QueueState(queue=q) for q in queues}
        self._open = {q: asyncio.Event() for q in self._states}
        self._holding = {q: asyncio.Event() for q in self._states}
        self._notice = asyncio.Event()
        for event in self._open.values():
            event.set()

    def paused(self, queue: str) -> bool:
        """Whether ``queue`` is paused as far as this worker knows."""
        return self._states[queue].paused

    def holding(self, queue: str) -> bool:
        """Whether this worker's loop for ``queue`` waits at the gate (pulls nothing)."""
        return self._holding[queue].is_set()

    async def held(self, queue: str) -> None:
        """Wait until this worker's loop for ``queue`` holds it (a test signal)."""
        await self._holding[queue].wait()

    async def load(self) -> None:
        """Read every queue's state and start listening for changes (before any loop)."""
        await self.refresh()
        for queue in self._states:
            await self._log.watch(queue_subject(queue, "*"), self._noticed)

    async def run(self, stopping: asyncio.Event) -> None:
        """Re-read the states on each notice and every :data:`REFRESH` seconds until
        ``stopping``; a failed read is logged and tried again next time."""
        while not stopping.is_set():
            noticed = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notice.wait(), REFRESH)
                noticed = True
            self._notice.clear()
            try:
                await self._refresh_after_notice() if noticed else await self.refresh()
            except Exception as exc:
                log.warning("could not read the queues' pause states: %r", exc)

    async def refresh(self) -> bool:
        """Read every queue's state; True if any changed."""
        changed = False
        for queue in self._states:
            changed |= self._take(await self._book.state(queue))
        return changed

    async def _refresh_after_notice(self) -> None:
        # The notice can arrive a moment before the stream has stored the event.
        for _ in range(_NOTICE_RETRIES):
            if await self.refresh():
                return
            await asyncio.sleep(_NOTICE_WAIT)

    async def _noticed(self, _subject: str, _data: bytes) -> None:
        self._notice.set()

    def limits(self, queue: str) -> QueueLimits:
        """The limits of ``queue`` as far as this worker knows (:mod:`worker.limits`)."""
        return self._states[queue].limits

    def _take(self, state: QueueState) -> bool:
        held = self._states[state.queue]
        if state.seq <= held.seq:
            return False
        self._states[state.queue] = state
        if state.limits != held.limits:
            log.info(
                "queue %s limits set by %s at %s: %s",
                state.queue,
                state.limits_by,
                state.limits_at,
                state.limits.model_dump(exclude_none=True) or "none",
            )
        if state.paused == held.paused:
            return True
        if state.paused:
            self._open[state.queue].clear()
            log.info("queue %s paused by %s at %s", state.queue, state.changed_by, state.changed_at)
        else:
            self._open[state.queue].set()
            log.info(
                "queue %s resumed by %s at %s", state.queue, state.changed_by, state.changed_at
            )
        return True

    async def open_for(self, queue: str) -> None:
        """Wait until ``queue`` is not paused (at once when it is not)."""
        gate = self._open[queue]
        if gate.is_set():
            return
        self._holding[queue].set()
        state = self._states[queue]
        log.info(
            "queue %s paused by %s at %s: holding (no pull requests)",
            queue,
            state.changed_by,
            state.changed_at,
        )
        try:
            await gate.wait()
        finally:
            self._holding[queue].clear()
        log.info("queue %s resumed: pulling again", queue)
