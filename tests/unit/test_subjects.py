"""NATS subject matching as the server does it (``*`` one token, ``>`` one or more)."""

from __future__ import annotations

import pytest

from ferrisqueue.domain.subjects import subject_matches

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("subject", "pattern", "matches"),
    [
        ("fq.job.default.j1.submitted", "fq.job.>", True),
        ("fq.job", "fq.job.>", False),  # > needs at least one token
        ("fq.job.default.j1.submitted", "fq.job.*.*.submitted", True),
        ("fq.job.default.j1.started", "fq.job.*.*.submitted", False),
        ("fq.job.default.j1", "fq.job.*.*.submitted", False),
        ("fq.job.default.j1.submitted.x", "fq.job.*.*.submitted", False),
        ("a.b", "a.b", True),
        ("nobody.stores.this", "fq.job.>", False),
    ],
)
def test_a_subject_matches_a_pattern_token_by_token(
    subject: str, pattern: str, matches: bool
) -> None:
    assert subject_matches(subject, pattern) is matches
