"""Waiting for JetStream's answer to a publish, several thousand times a second.

``JetStreamContext.publish`` answers through nats-py's ``request()``, which makes a random
token (an ``os.urandom`` call), a ``wait_for`` and a ``PubAck`` object per publish, which
stood out in the profile of a worker on short jobs (two appends each). :class:`AckInbox`
keeps one inbox subscription per connection instead, names each publish's reply by a
counter, and times the wait with one timer handle.
"""

from __future__ import annotations

import asyncio
import itertools

from nats.aio.client import Client
from nats.aio.msg import Msg


class AckInbox:
    """The replies to this connection's publishes, matched by their reply subject."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._subscribing = asyncio.Lock()
        self._numbers = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str], within: float
    ) -> Msg:
        """Publish and return the reply; ``TimeoutError`` if none came ``within`` seconds.

        The reply may be a status message (``Status: 503`` when nothing listens on
        ``subject``): the caller reads it."""
        prefix = self._prefix or await self._subscribe()
        reply = f"{prefix}{next(self._numbers)}"
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Msg] = loop.create_future()
        self._waiting[reply] = answer
        timer = loop.call_later(within, _expire, answer)
        try:
            await self._nc.publish(subject, data, reply=reply, headers=headers)
            return await answer
        finally:
            timer.cancel()
            self._waiting.pop(reply, None)

    async def _subscribe(self) -> str:
        async with self._subscribing:
            if self._prefix is None:
                prefix = f"{self._nc.new_inbox()}."
                # nats-py subscribes again by itself after a reconnect.
                await self._nc.subscribe(f"{prefix}*", cb=self._arrived)
                self._prefix = prefix
            return self._prefix

    async def _arrived(self, msg: Msg) -> None:
        answer = self._waiting.get(msg.subject)
        if answer is not None and not answer.done():
            answer.set_result(msg)


def _expire(answer: asyncio.Future[Msg]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())
