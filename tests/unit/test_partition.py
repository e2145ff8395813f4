"""The partition function of the jobs projection (ferrisqueue/domain/partition.py): stable
across processes, every partition gets a share, one partition owns everything, and the
checkpoint names round-trip."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from ferrisqueue.domain.ids import new_job_id
from ferrisqueue.domain.partition import Partition, owner, parse_checkpoint, subject_owner
from ferrisqueue.settings import Settings

pytestmark = pytest.mark.timeout(20)


def test_the_owner_of_a_job_is_a_stable_hash_not_pythons_salted_one() -> None:
    # CRC-32 values, fixed for ever: a partition must own the same jobs after a restart, on
    # another machine, under another Python (crc32(b"a") = 3904355907).
    assert (owner("a", 4), owner("job-1", 4), owner("job-2", 4)) == (3, 3, 1)
    ids = [new_job_id() for _ in range(50)]
    script = (
        "import sys; from ferrisqueue.domain.partition import owner; "
        "print(' '.join(str(owner(i, 7)) for i in sys.argv[1:]))"
    )
    # A fresh interpreter, with another hash seed, computes the same owners.
    other = subprocess.run(
        [sys.executable, "-c", script, *ids],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
        timeout=15,
    )
    assert other.stdout.split() == [str(owner(i, 7)) for i in ids]


@pytest.mark.parametrize("count", [2, 3, 8])
def test_every_job_has_exactly_one_owner_and_every_partition_a_fair_share(count: int) -> None:
    ids = [new_job_id() for _ in range(4000)]
    partitions = Partition(0, count).siblings()
    subjects = [f"fq.job.default.{job}.submitted" for job in ids]
    owners = [[p.index for p in partitions if p.owns_subject(s)] for s in subjects]
    assert all(len(found) == 1 for found in owners)
    shares = Counter(found[0] for found in owners)
    assert set(shares) == set(range(count))
    assert min(shares.values()) > 0.7 * len(ids) / count  # time-ordered ids spread evenly
    # The subject's job decides, whatever the queue or event.
    assert all(subject_owner(f"fq.job.other.{job}.started-p3", count) == owner(job, count)
               for job in ids[:100])  # fmt: skip


def test_one_partition_owns_everything_and_keeps_the_old_names() -> None:
    whole = Partition()
    assert whole.whole and whole.siblings() == [whole]
    assert all(whole.owns_subject(f"fq.job.q.{new_job_id()}.submitted") for _ in range(100))
    assert whole.owns_subject("not.a.job.subject")
    assert whole.checkpoint("jobs") == "jobs"
    assert whole.suffixed("fq-projector") == "fq-projector"


def test_a_subject_that_names_no_job_belongs_to_partition_0() -> None:
    assert subject_owner("fq.job.broken", 5) == 0
    assert subject_owner("fq.other.q.job.submitted", 5) == 0


def test_partition_names_round_trip() -> None:
    for partition in [Partition(), *Partition(0, 3).siblings()]:
        assert parse_checkpoint("jobs", partition.checkpoint("jobs")) == partition
    assert Partition(1, 2).checkpoint("jobs") == "jobs/1of2"
    assert Partition(1, 2).suffixed("projector") == "projector-1of2"
    for name in ("workers", "jobs/", "jobs/xof2", "jobs/2of2", "jobsx/0of2", "jobs/0of0"):
        assert parse_checkpoint("jobs", name) is None, name


def test_settings_refuse_a_partition_that_does_not_exist() -> None:
    settings = Settings(_env_file=None, projector_partitions=3, projector_partition=2)  # type: ignore[call-arg]
    assert settings.projector_share == Partition(2, 3)
    with pytest.raises(ValidationError, match="not one of the 3 partitions"):
        Settings(_env_file=None, projector_partitions=3, projector_partition=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="no partition"):
        Partition(2, 2)
