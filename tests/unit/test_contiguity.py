"""The contiguity rule (issue 13): a projection applies its stream in order and never past a
delivery it did not receive; a gap is a hole in the stream (go on) or a lost delivery (stop
before it, so the projector re-reads the log from its checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from projections.contiguity import FirstStored, Gap, contiguous, split_at_gap

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class Item:
    seq: int


def items(*seqs: int) -> list[Item]:
    return [Item(seq) for seq in seqs]


def seqs(found: list[Item]) -> list[int]:
    return [item.seq for item in found]


@pytest.mark.parametrize(
    ("after", "delivered", "run", "gap", "rest"),
    [
        (0, [1, 2, 3], [1, 2, 3], None, []),
        (5, [], [], None, []),
        (2, [1, 2, 3, 4], [3, 4], None, []),  # applied already: dropped
        (0, [1, 2, 2, 3, 1], [1, 2, 3], None, []),  # redelivered within the batch
        (0, [2, 3], [], Gap(0, 2), [2, 3]),  # the first one missing
        (10, [11, 12, 15, 16], [11, 12], Gap(12, 15), [15, 16]),  # a hole inside
        (0, [1, 3, 5], [1], Gap(1, 3), [3, 5]),  # only the first gap
    ],
)
def test_a_batch_is_split_at_its_first_gap(
    after: int, delivered: list[int], run: list[int], gap: Gap | None, rest: list[int]
) -> None:
    found_run, found_gap, found_rest = split_at_gap(after, items(*delivered))
    assert (seqs(found_run), found_gap, seqs(found_rest)) == (run, gap, rest)


def test_a_gap_names_what_was_not_delivered() -> None:
    assert Gap(12, 15).missing == range(13, 15)
    assert str(Gap(12, 15)) == "sequences 13-14 not delivered (the next delivery was 15)"
    assert str(Gap(0, 2)) == "sequence 1 not delivered (the next delivery was 2)"


def stream_holding(*stored: int) -> tuple[FirstStored, list[int]]:
    """``first_stored`` of a stream that holds exactly ``stored``, recording each question."""
    asked: list[int] = []

    async def first_stored(seq: int) -> int | None:
        asked.append(seq)
        return min((s for s in stored if s >= seq), default=None)

    return first_stored, asked


async def test_a_batch_without_gaps_asks_the_stream_nothing() -> None:
    first_stored, asked = stream_holding(*range(1, 10))
    taken, lost = await contiguous(3, items(4, 5, 6), first_stored)
    assert (seqs(taken), lost, asked) == ([4, 5, 6], None, [])


async def test_a_lost_delivery_stops_the_batch_before_it() -> None:
    # The stream holds 1..10; the consumer delivered 6 and 7 but never 4 and 5.
    first_stored, asked = stream_holding(*range(1, 11))
    taken, lost = await contiguous(2, items(3, 6, 7), first_stored)
    assert seqs(taken) == [3]
    assert lost == Gap(3, 6)
    assert asked == [4]


async def test_holes_in_the_stream_are_not_lost_deliveries() -> None:
    # Messages 4, 5 and 8 were removed from the stream (a limit, a purge): nothing to wait for.
    first_stored, asked = stream_holding(1, 2, 3, 6, 7, 9, 10)
    taken, lost = await contiguous(3, items(6, 7, 9, 10), first_stored)
    assert (seqs(taken), lost) == ([6, 7, 9, 10], None)
    assert asked == [4, 8]


async def test_a_hole_then_a_lost_delivery_applies_up_to_the_loss() -> None:
    first_stored, _ = stream_holding(1, 2, 5, 6, 7, 8)  # 3 and 4 gone; 7 lost in transit
    taken, lost = await contiguous(2, items(5, 6, 8), first_stored)
    assert (seqs(taken), lost) == ([5, 6], Gap(6, 8))
