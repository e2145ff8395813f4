"""One shape for a service's background loops: start, drain, stop, and one error policy.

Like River's maintenance services, every loop that pulls from a durable consumer one message
at a time (the scheduler's dead-letter router and sweeper, timer relay and tick relay) is a
:class:`ConsumerLoop`: it says which consumer it reads and how to handle *one* message; the
base owns the rest. The projector's loops, which apply bursts, and the worker's, one per
queue, are ServiceLoops too (``projections/follow.py``, ``worker/runner.py``).

Error policy (the same for every loop)
--------------------------------------
* **An item fails** (its handler raises): logged with the loop's name and the message's
  subject, stream sequence and delivery count (a :class:`FerrisQueueError`, such as NATS being
  away, as a warning; anything else with its traceback), then nak'd with capped exponential
  backoff by its delivery count. The loop goes on with the next item: JetStream brings the
  failed one back later, so a fault that passes (a NATS hiccup) costs a delay, not the item.
* **An item is poison** (:class:`Poison`, or :class:`DecodeError`: no retry can ever handle
  it): logged as an error and terminated, so the consumer never delivers it again. It is
  *parked* where it is: the message stays in its stream at the logged sequence for an
  operator to read, and the loop goes on.
* **A handler wants an item again later** without failing: it raises :class:`Redeliver`.
* **The loop itself fails** (its consumer cannot be created, a bug outside one item): logged,
  then the loop starts again after a capped backoff (cut short by a stop). :meth:`run` does
  not raise it, so a failing loop never cancels a sibling running in the same ``TaskGroup``;
  only a failure the loop declares :attr:`~ServiceLoop.fatal` (one no restart can mend) ends
  the service. A loop that ends a life on purpose raises :class:`Restart`: the next begins
  without counting a failure.
* **Stop**: once ``stopping`` is set nothing new is handed over; the burst in hand is
  finished (the drain), and messages that arrived but were not handed over are nak'd, so
  another instance gets them at once instead of after AckWait.

Test signals
------------
Each loop counts what it did in :attr:`ServiceLoop.signals`; a test awaits a count with a
timeout (``await loop.signals.parked.reached(1, timeout=5)``) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from ferrisqueue.domain.backoff import RetryPolicy
from ferrisqueue.errors import DecodeError, FerrisQueueError
from ferrisqueue.log.port import Consumer, Delivery, LogPort
from ferrisqueue.log.topology import load_consumer_definition, prepare_consumer

log = logging.getLogger(__name__)

ITEM_RETRY = RetryPolicy(base=1.0, cap=30.0, jitter=0.2)
"""How long a failed item waits before it is delivered again, by its delivery count."""

RESTART = RetryPolicy(base=1.0, cap=30.0, jitter=0.2)
"""How long a failed loop waits before it starts again, by its failures in a row."""


class Poison(FerrisQueueError):
    """An item no retry can handle (it cannot be decoded, or names what no longer exists):
    the loop parks it instead of retrying it for ever."""


class Redeliver(FerrisQueueError):
    """Raised by a handler that wants its item again in ``after`` seconds. Not a failure:
    the handler logs why, the loop only naks."""

    def __init__(self, after: float) -> None:
        super().__init__(f"deliver again in {after:g}s")
        self.after = after


class Restart(FerrisQueueError):
    """Raised by :meth:`ServiceLoop.serve` to end this life and begin the next one after
    ``after`` seconds, without counting a failure: the loop knows why and has dealt with it
    (a projector that must re-read the log from its checkpoint)."""

    def __init__(self, why: str, *, after: float = 0.0) -> None:
        super().__init__(why)
        self.after = after


class Signal:
    """A count a test can await with a timeout: ``await signal.reached(3, timeout=5)``."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self.count += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # A test signal is awaited with a deadline, never open-ended: the timeout is the point.
    async def reached(self, count: int = 1, *, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the count is at least ``count``; :class:`TimeoutError` after
        ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.count < count:
                await self._changed.wait()


class LoopSignals:
    """What a loop did so far, for tests to wait on."""

    def __init__(self) -> None:
        self.serving = Signal()
        """A life of the loop began taking items (its consumer is ready)."""
        self.handled = Signal()
        """An item was handled and acked."""
        self.retried = Signal()
        """An item failed and was nak'd with backoff."""
        self.redelivered = Signal()
        """An item was nak'd because its handler asked for it (:class:`Redeliver`)."""
        self.parked = Signal()
        """A poison item was terminated."""
        self.loop_failures = Signal()
        """A life of the loop failed; it starts again after a backoff."""
        self.stopped = asyncio.Event()
        """:meth:`ServiceLoop.run` returned."""


class ServiceLoop(ABC):
    """A background loop that serves until stopped and survives its own failures.

    Subclasses name themselves (:attr:`name`) and implement :meth:`serve`, one life of the
    loop; :meth:`run` starts it again after a failure. Run it with ``await loop.run(stopping)``
    (a service's shared stop), or ``loop.start()`` and later ``await loop.stop()``.
    """

    name: str = "loop"
    """What the loop is called in logs and task names."""
    fatal: tuple[type[Exception], ...] = ()
    """Failures no restart can mend (an operator must act): :meth:`run` raises them."""

    def __init__(
        self,
        *,
        restart: RetryPolicy = RESTART,
        draw: Callable[[], float] = random.random,
    ) -> None:
        """``restart``: the backoff between failed lives; ``draw``: the random source of
        every backoff's jitter (a constant in tests)."""
        self.signals = LoopSignals()
        self._restart = restart
        self._draw = draw
        self._failures = 0
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.up = False
        """A life of the loop is taking items now (a health check reads it): set when it
        starts serving, cleared when that life ends."""

    @abstractmethod
    async def serve(self, stopping: asyncio.Event) -> None:
        """One life of the loop: take items until ``stopping`` is set, then return."""

    def serving(self) -> None:
        """Called by :meth:`serve` once it takes items: the failures in a row are over."""
        self._failures = 0
        self.up = True
        self.signals.serving.bump()

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Serve until ``stopping`` (or :meth:`stop`); start again after a failure.

        Raises only :class:`asyncio.CancelledError` and the loop's :attr:`fatal` failures:
        a loop's trouble stays its own.
        """
        if stopping is not None:
            self._stopping = stopping
        stopping = self._stopping
        try:
            while not stopping.is_set():
                try:
                    await self.serve(stopping)
                except Restart as again:
                    self.up = False
                    log.info("%s starts again: %s", self.name, again)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), again.after)
                    continue
                except self.fatal:
                    raise
                except Exception as exc:
                    failure: BaseException | str = exc
                else:
                    if stopping.is_set():
                        break
                    failure = "it ended without being stopped"
                self.up = False
                self._failures += 1
                self.signals.loop_failures.bump()
                delay = self._restart.delay(self._failures, self._draw())
                _log_failure(
                    failure,
                    "%s failed (%d in a row), starting again in %.1fs",
                    self.name,
                    self._failures,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        finally:
            self.up = False
            self.signals.stopped.set()
            log.info("%s stopped", self.name)

    def start(self) -> asyncio.Task[None]:
        """Run the loop in a task of its own until :meth:`stop`."""
        self._task = asyncio.create_task(self.run(), name=self.name)
        return self._task

    async def stop(self) -> None:
        """Ask the loop to stop and wait until it has drained (see the module's notes).

        This sets the event :meth:`run` watches: a ``stopping`` shared with other loops
        stops them too, as a service's SIGTERM does."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        else:
            await self.signals.stopped.wait()


class ConsumerLoop(ServiceLoop):
    """A loop over one durable pull consumer: each message is one item, handled by
    :meth:`handle` under the module's error policy and acked when it returns.

    Subclasses say which consumer (:attr:`stream`, :attr:`consumer`, whose definition is in
    ``ferrisqueue/log/jetstream/consumers``) and how many messages to ask for at once."""

    stream: str
    consumer: str
    request_size: int = 1
    """Most messages asked for per pull request (one burst, see :meth:`handle_burst`)."""

    def __init__(
        self,
        log: LogPort,
        *,
        request_size: int | None = None,
        retry: RetryPolicy = ITEM_RETRY,
        restart: RetryPolicy = RESTART,
        draw: Callable[[], float] = random.random,
        source: Callable[[], Consumer] | None = None,
    ) -> None:
        """``log``: where the consumer is; ``request_size``: instead of the class's;
        ``retry``: the backoff of a failed item; ``source``: what to pull from instead of
        the log's consumer (tests)."""
        super().__init__(restart=restart, draw=draw)
        self._port = log
        if request_size is not None:
            self.request_size = request_size
        self._retry = retry
        self._source = source or (lambda: log.consumer(self.stream, self.consumer))

    async def prepare(self) -> None:
        """Before each life's first pull: create or update the durable consumer from its
        definition in ``ferrisqueue/log/jetstream/consumers`` (or, as a NATS role, check that
        ``fq init`` did)."""
        await prepare_consumer(
            self._port, self.stream, load_consumer_definition(self.stream, self.consumer)
        )

    @abstractmethod
    async def handle(self, msg: Delivery) -> None:
        """Handle one message. Return to have it acked; raise :class:`Redeliver` to have it
        again later, :class:`Poison` to park it, anything else to have it retried."""

    async def handle_burst(self, burst: list[Delivery]) -> None:
        """Handle the messages of one burst, by default one after another."""
        for msg in burst:
            await self.process(msg)

    async def serve(self, stopping: asyncio.Event) -> None:
        await self.prepare()
        source = self._source()
        await source.start()
        log.info("%s: pulling from %s on %s", self.name, self.consumer, self.stream)
        self.serving()

        async def request_size() -> int:
            return self.request_size

        try:
            async for burst in source.bursts(stopping, request_size=request_size):
                await self.handle_burst(burst)
        finally:
            await self._give_back(source)

    async def process(self, msg: Delivery) -> None:
        """Handle one message, then ack, nak or park it (the error policy). Never raises but
        :class:`asyncio.CancelledError`."""
        try:
            await self.handle(msg)
        except Redeliver as again:
            await _quietly(msg.nak(delay=again.after))
            self.signals.redelivered.bump()
        except (Poison, DecodeError) as exc:
            log.error("%s: parked %s, it can never be handled: %s", self.name, _where(msg), exc)
            await _quietly(msg.term())
            self.signals.parked.bump()
        except Exception as exc:
            delay = self._retry.delay(msg.deliveries, self._draw())
            _log_failure(exc, "%s: failed on %s, again in %.1fs", self.name, _where(msg), delay)
            await _quietly(msg.nak(delay=delay))
            self.signals.retried.bump()
        else:
            await _quietly(msg.ack())
            self.signals.handled.bump()

    async def _give_back(self, source: Consumer) -> None:
        """Nak what arrived but was never handed over (else it waits for AckWait)."""
        try:
            left = await source.stop()
        except Exception as exc:  # the connection is gone: the server redelivers after AckWait
            log.debug("%s: could not stop pulling: %r", self.name, exc)
            return
        for msg in left:
            await _quietly(msg.nak())


def _log_failure(failure: BaseException | str, message: str, *args: object) -> None:
    """An expected failure (FerrisQueue's own error) as a warning with its text; anything
    else with its traceback, as it is a bug to look at."""
    if isinstance(failure, BaseException) and not isinstance(failure, FerrisQueueError):
        log.error(message, *args, exc_info=failure)
    else:
        log.warning(message + ": %s", *args, failure)


def _where(msg: Delivery) -> str:
    """The message for a log line: subject, stream sequence, delivery count."""
    return f"{msg.subject!r} (seq {msg.seq}, delivery {msg.deliveries})"


async def _quietly(action: Awaitable[None]) -> None:
    try:
        await action
    except Exception as exc:  # the connection is gone: the server redelivers after AckWait
        log.debug("ack/nak/term failed: %r", exc)
