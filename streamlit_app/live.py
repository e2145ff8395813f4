"""Live updates: parts of a page that re-read the gateway on a timer, without reloading the
page (``st.fragment(run_every=...)``: only that part reruns, so a half-typed filter or an
open dialog elsewhere on the page stays as it is).

The operator picks the interval in the sidebar (:func:`controls`), or turns it off; every
page wraps its changing parts in :func:`fragment`.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from streamlit_app import data

INTERVALS: dict[str, float | None] = {
    "off": None,
    "2 s": 2.0,
    "5 s": 5.0,
    "10 s": 10.0,
    "30 s": 30.0,
    "1 min": 60.0,
}
DEFAULT = "5 s"
KEY = "fq_live_every"


def controls() -> None:
    """The sidebar's choice of refresh interval (kept for the whole session)."""
    st.selectbox(
        "Live refresh",
        list(INTERVALS),
        index=list(INTERVALS).index(DEFAULT),
        key=KEY,
        help="How often the page re-reads the gateway; off: only on Refresh or a click.",
    )


def every() -> float | None:
    """Seconds between refreshes, or None when the operator turned them off."""
    return INTERVALS.get(st.session_state.get(KEY, DEFAULT))


def fragment(render: Callable[[], None]) -> None:
    """Run ``render`` now, and again every :func:`every` seconds, each time with fresh
    answers (the timer is why it runs: a cached answer would show nothing new)."""

    def fresh() -> None:
        data.clear()
        render()

    fresh.__qualname__ = f"live.{render.__module__}.{render.__qualname__}"
    st.fragment(fresh, run_every=every())()
