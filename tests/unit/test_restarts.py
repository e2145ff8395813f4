"""The restart rules of ``fq up`` (ferrisqueue.domain.restarts), on a clock that is a number."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferrisqueue.domain.restarts import CrashLoop, Restart, RestartHistory, RestartPolicy
from ferrisqueue.settings import Settings

pytestmark = pytest.mark.timeout(5)

POLICY = RestartPolicy(base=1, cap=8, reset_after=30, crash_loop_exits=5, crash_loop_window=60)


def crash_at_once(now: float, decision: Restart | CrashLoop) -> float:
    """The child restarted after the decision's delay and died 0.5 s later: that time."""
    assert isinstance(decision, Restart)
    return now + decision.delay + 0.5


def test_the_backoff_doubles_with_each_exit_in_a_row_up_to_the_cap() -> None:
    history = RestartHistory(POLICY)
    delays = []
    now = 0.0
    for _ in range(6):
        decision = history.exited(started_at=now - 0.5, now=now)
        assert isinstance(decision, Restart)
        delays.append(decision.delay)
        now += 61  # each exit alone in its window, and each after only 0.5 s up
    assert delays == [1, 2, 4, 8, 8, 8]
    assert history.restarts == 6


def test_a_child_that_stayed_up_long_enough_starts_its_backoff_afresh() -> None:
    history = RestartHistory(POLICY)
    first = history.exited(started_at=0, now=1)
    second = history.exited(started_at=2, now=3)
    assert isinstance(first, Restart) and isinstance(second, Restart)
    assert (first.delay, second.delay) == (1, 2)

    # Up 30 s (reset_after) before it died: the shortest wait again, but still counted.
    third = history.exited(started_at=5, now=35)

    assert third == Restart(delay=1, restart=3, recent_exits=3)
    assert history.in_a_row == 1


def test_just_short_of_reset_after_the_backoff_goes_on_growing() -> None:
    history = RestartHistory(POLICY)
    history.exited(started_at=0, now=1)

    decision = history.exited(started_at=2, now=31.9)

    assert isinstance(decision, Restart) and decision.delay == 2


def test_the_fifth_exit_within_the_window_is_a_crash_loop() -> None:
    history = RestartHistory(POLICY)
    now = 1.0
    decisions: list[Restart | CrashLoop] = []
    for _ in range(5):
        decisions.append(history.exited(started_at=now - 0.5, now=now))
        if isinstance(decisions[-1], Restart):
            now = crash_at_once(now, decisions[-1])

    assert [d.recent_exits for d in decisions] == [1, 2, 3, 4, 5]
    assert isinstance(decisions[-1], CrashLoop)
    assert decisions[-1] == CrashLoop(recent_exits=5, window=60)
    assert history.restarts == 4  # the fifth exit was not restarted


def test_exits_older_than_the_window_do_not_count() -> None:
    history = RestartHistory(POLICY)
    for now in (0, 10, 20, 30):
        assert isinstance(history.exited(started_at=now - 1, now=now), Restart)

    # The exit at 0 is 60 s old at 60: four in the window, not five.
    decision = history.exited(started_at=59, now=60)

    assert isinstance(decision, Restart) and decision.recent_exits == 4
    assert isinstance(history.exited(started_at=64, now=65), CrashLoop)


def test_one_exit_allowed_means_the_first_exit_stops_everything() -> None:
    history = RestartHistory(RestartPolicy(crash_loop_exits=1))

    assert history.exited(started_at=0, now=500) == CrashLoop(recent_exits=1, window=60)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base": 10, "cap": 5}, "cap must not be smaller"),
        ({"base": 20, "cap": 60}, "can never fit in 60s"),
        ({"crash_loop_exits": 0}, "greater than or equal to 1"),
        ({"crash_loop_window": 0}, "greater than 0"),
    ],
)
def test_a_policy_that_could_never_see_a_crash_loop_is_refused(
    fields: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        RestartPolicy(**fields)


def test_the_settings_build_the_policy_and_refuse_an_unsound_one() -> None:
    settings = Settings(
        up_restart_base=0.5,
        up_restart_cap=4,
        up_restart_reset=10,
        up_crash_loop_exits=3,
        up_crash_loop_window=20,
    )
    assert settings.restart_policy() == RestartPolicy(
        base=0.5, cap=4, reset_after=10, crash_loop_exits=3, crash_loop_window=20
    )

    with pytest.raises(ValidationError, match=r"FQ_UP_RESTART_.*can never fit in 10s"):
        Settings(up_restart_base=5, up_crash_loop_window=10)
