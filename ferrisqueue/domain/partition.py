"""Partitions of the jobs projection: which projector instance applies which job's events.

With ``FQ_PROJECTOR_PARTITIONS=N`` the jobs projection runs as N projectors, partition ``k``
applying the events of the jobs that hash to ``k`` and passing over the others (its
checkpoint still moves past them). The hash is CRC-32 of the job id taken from the subject
(``fq.job.<queue>.<job_id>.<event>``): stable across processes, machines and Python
versions (``hash()`` is salted per process), and read before the body is decoded, so a
partition spends almost nothing on another's events. A subject that names no job belongs to
partition 0, which parks it in the timeline as one projector would.

One partition (the default) owns everything and keeps the names it always had: checkpoint
``jobs``, lock ``projector``, consumer ``fq-projector``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ferrisqueue.domain.subjects import JOB_SUBJECT_PREFIX

_PREFIX = JOB_SUBJECT_PREFIX.split(".")


def owner(job_id: str, count: int) -> int:
    """The partition (0 to ``count`` - 1) that applies job ``job_id``'s events."""
    return zlib.crc32(job_id.encode()) % count


def subject_owner(subject: str, count: int) -> int:
    """The partition that applies the event stored at ``subject``: its job's, or 0 when the
    subject names no job. Splits the subject only (no validation: cheap on every event)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[:2] != _PREFIX:
        return 0
    return owner(parts[3], count)


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"no partition {self.index} of {self.count}")

    @property
    def whole(self) -> bool:
        """One partition: it owns every event."""
        return self.count == 1

    @property
    def label(self) -> str:
        """``0of2``; empty for the whole."""
        return "" if self.whole else f"{self.index}of{self.count}"

    def owns_subject(self, subject: str) -> bool:
        return self.whole or subject_owner(subject, self.count) == self.index

    def checkpoint(self, base: str) -> str:
        """The checkpoint (and health) name of this partition of projection ``base``:
        ``jobs``, or ``jobs/0of2``."""
        return base if self.whole else f"{base}/{self.label}"

    def suffixed(self, base: str) -> str:
        """A lock or consumer name for this partition: ``fq-projector``, or
        ``fq-projector-0of2`` (a subject/file-safe token)."""
        return base if self.whole else f"{base}-{self.label}"

    def siblings(self) -> list[Partition]:
        """Every partition of this partitioning, this one included."""
        return [Partition(k, self.count) for k in range(self.count)]


def parse_checkpoint(base: str, name: str) -> Partition | None:
    """The partition a checkpoint name of projection ``base`` belongs to (None: another
    projection's, or a name this code does not write)."""
    if name == base:
        return Partition()
    head, sep, label = name.partition("/")
    index, of, count = label.partition("of")
    if head != base or not sep or not of or not index.isdigit() or not count.isdigit():
        return None
    try:
        return Partition(int(index), int(count))
    except ValueError:
        return None
