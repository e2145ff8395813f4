"""The contiguity rule: a projection applies its stream in order, and never past a message
it did not receive.

Why this is needed. The projector's consumers acknowledge with AckAll (one ack per batch),
and acknowledging sequence *n* acknowledges every earlier delivery too. When deliveries are
lost in transit — a consumer's leader moved to another node while a pull request was being
served (issue 13) — the acknowledgement of a later message acknowledged the lost ones as
well, JetStream never redelivered them, and the checkpoint moved past them for good: the
read store kept completed jobs ``running`` for ever.

The rule. Before a batch is applied, every sequence between the checkpoint and each message
must be accounted for: delivered, or no longer in the stream (removed by a limit such as the
heartbeat stream's ``max_age``, or by a purge). A sequence the stream still holds but the
consumer did not deliver is a *lost delivery*: the batch is cut just before it, and the
projector re-creates its consumer from the checkpoint so that JetStream delivers it again.
Nothing is ever acknowledged past what was applied.

The event log (``FQ_EVENTS``) refuses deletes, so there a gap is always a lost delivery; the
check asks the stream anyway (one direct read per gap, only when a gap is seen), so the same
rule serves streams that may have holes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol, TypeVar


class Sequenced(Protocol):
    """Anything that knows its stream sequence (a decoded delivery)."""

    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=Sequenced)


class Gap(NamedTuple):
    """Sequences after ``after`` up to ``delivered`` (excluded) were not delivered."""

    after: int
    delivered: int

    @property
    def missing(self) -> range:
        return range(self.after + 1, self.delivered)

    def __str__(self) -> str:
        first, last = self.missing[0], self.missing[-1]
        which = f"sequence {first}" if first == last else f"sequences {first}-{last}"
        return f"{which} not delivered (the next delivery was {self.delivered})"


def split_at_gap(after: int, items: Sequence[T]) -> tuple[list[T], Gap | None, list[T]]:
    """The items that follow ``after`` one sequence at a time, the first gap (or None), and
    the items from that gap on. Items at or below the position reached are dropped:
    applied already, or delivered twice."""
    run: list[T] = []
    expected = after + 1
    for index, item in enumerate(items):
        if item.seq < expected:
            continue
        if item.seq > expected:
            return run, Gap(expected - 1, item.seq), list(items[index:])
        run.append(item)
        expected += 1
    return run, None, []


FirstStored = Callable[[int], Awaitable[int | None]]
"""The sequence of the first message the stream holds at or after a sequence (None: none)."""


async def contiguous(
    after: int, items: Sequence[T], first_stored: FirstStored
) -> tuple[list[T], Gap | None]:
    """The items that may be applied after position ``after``, and the first lost delivery
    (None if every gap turned out to be a hole in the stream).

    Each gap costs one ``first_stored`` call: if the stream holds a message inside the gap,
    the delivery was lost and the items stop there."""
    taken: list[T] = []
    while True:
        run, gap, rest = split_at_gap(after, items)
        taken += run
        if gap is None:
            return taken, None
        stored = await first_stored(gap.after + 1)
        if stored is not None and stored < gap.delivered:
            return taken, gap
        after, items = gap.delivered - 1, rest  # a hole: nothing is there to receive
