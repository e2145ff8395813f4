"""Queues: one queue over time. Its depth by state (queued, delayed, retrying, running),
throughput, p50/p95/p99 wait and run time per minute, and the same per job type.

All from ``GET /stats/queues/{queue}``: the minutes the projector records (counts and
latency histograms per minute and job type, and the depth at the end of each minute it
changed), so a page reads a window, never the jobs themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data
from streamlit_app.display import milliseconds

WINDOWS = {"15 minutes": 15, "1 hour": 60, "6 hours": 360, "24 hours": 1440}
STATES = {
    "pending:queued": "queued",
    "pending:scheduled": "delayed",
    "pending:retrying": "retrying",
    "running": "running",
}
PERCENTILES = ("p50", "p95", "p99")


def minutes_index(stats: dict[str, Any]) -> pd.DatetimeIndex:
    return pd.date_range(
        _minute(stats["since"]), _minute(stats["until"]), freq="min", name="minute (UTC)"
    )


def depth_frame(stats: dict[str, Any]) -> pd.DataFrame:
    """Jobs in each state at every minute of the window (a state keeps its depth until its
    next point; a point before the window gives the depth it starts with)."""
    index = minutes_index(stats)
    frame = pd.DataFrame(0, index=index, columns=list(STATES.values()))
    points = pd.DataFrame(stats["depth"], columns=["minute", "state", "depth"])
    if points.empty:
        return frame
    points["minute"] = pd.to_datetime(points["minute"], utc=True).dt.floor("min")
    wide = points.pivot_table(index="minute", columns="state", values="depth", aggfunc="last")
    wide = wide.reindex(wide.index.union(index)).ffill().reindex(index)
    for state, label in STATES.items():
        if state in wide.columns:
            frame[label] = wide[state].fillna(0).astype(int)
    return frame


def _per_minute(stats: dict[str, Any], columns: list[str]) -> pd.DataFrame:
    """``columns`` of the answer's minutes at every minute of the window (NaN: no row)."""
    index = minutes_index(stats)
    rows = pd.DataFrame(stats["minutes"], columns=["minute", *columns])
    rows.index = pd.DatetimeIndex(pd.to_datetime(rows["minute"], utc=True)).floor("min")
    return rows[columns].astype(float).reindex(index)


def throughput_frame(stats: dict[str, Any]) -> pd.DataFrame:
    """Jobs submitted, succeeded and failed per minute, 0 where none."""
    return _per_minute(stats, ["submitted", "succeeded", "failed"]).fillna(0).astype(int)


def latency_frame(stats: dict[str, Any], kind: str) -> pd.DataFrame:
    """``kind`` (``wait`` or ``run``) p50/p95/p99 in ms per minute with jobs (others empty)."""
    frame = _per_minute(stats, [f"{kind}_ms_{p}" for p in PERCENTILES])
    frame.columns = list(PERCENTILES)
    return frame


def types_table(stats: dict[str, Any]) -> pd.DataFrame:
    """Per job type over the window: counts and formatted percentiles."""
    rows = [
        {
            "job type": row["type"],
            "submitted": row["submitted"],
            "succeeded": row["succeeded"],
            "failed attempts": row["failed"],
            "dead-lettered": row["dead_lettered"],
            **{f"wait {p}": milliseconds(row[f"wait_ms_{p}"]) for p in PERCENTILES},
            **{f"run {p}": milliseconds(row[f"run_ms_{p}"]) for p in PERCENTILES},
        }
        for row in stats["types"]
    ]
    columns = ["job type", "submitted", "succeeded", "failed attempts", "dead-lettered"]
    columns += [f"wait {p}" for p in PERCENTILES] + [f"run {p}" for p in PERCENTILES]
    return pd.DataFrame(rows, columns=columns)


def chart(frame: pd.DataFrame, *, mark: str, y_label: str, colors: list[str] | None = None) -> None:
    """``frame`` (one column per series, indexed by minute) as a Vega-Lite chart, from a spec
    written here: ``st.line_chart`` builds it through Altair, which took about 60 ms a chart."""
    long = frame.rename_axis("minute").reset_index().melt("minute", var_name="series")
    color: dict[str, Any] = {"field": "series", "type": "nominal", "title": None}
    if colors:
        color["scale"] = {"domain": list(frame.columns), "range": colors}
    encoding = {
        "x": {"field": "minute", "type": "temporal", "title": "minute (UTC)"},
        "y": {"field": "value", "type": "quantitative", "title": y_label},
        "color": color,
        **({"xOffset": {"field": "series"}} if mark == "bar" else {}),
    }
    st.vega_lite_chart(
        long,
        {"mark": {"type": mark, "tooltip": True}, "encoding": encoding, "height": 220},
        width="stretch",
    )


def render() -> None:
    url = data.gateway_url()
    st.title("Queues")
    with data.section(url, "the queues"):
        names = data.queue_names(url)
        if not names:
            st.info("No jobs yet, so no queue. Submit one with `fq submit echo`.")
            return
        columns = st.columns([1, 2])
        queue = columns[0].selectbox("Queue", names, key="queues_queue")
        with columns[1]:
            window = st.segmented_control(
                "Window", list(WINDOWS), default="1 hour", key="queues_window"
            )
        window = window or "1 hour"
        show_queue(data.queue_stats(url, queue, minutes=WINDOWS[window]), window)


def show_queue(stats: dict[str, Any], window: str) -> None:
    now = stats["depth_now"]
    columns = st.columns(len(STATES))
    for column, (state, label) in zip(columns, STATES.items(), strict=True):
        column.metric(f"Jobs {label} now", now.get(state, 0), border=True)
    st.subheader(f"Depth by state, last {window}")
    chart(depth_frame(stats), mark="line", y_label="jobs")
    st.subheader("Throughput")
    chart(
        throughput_frame(stats),
        mark="bar",
        y_label="jobs per minute",
        colors=["#1565c0", "#2e7d32", "#c62828"],
    )
    left, right = st.columns(2)
    with left:
        st.subheader("Wait time (ms)")
        chart(latency_frame(stats, "wait"), mark="line", y_label="ms")
    with right:
        st.subheader("Run time (ms)")
        chart(latency_frame(stats, "run"), mark="line", y_label="ms")
    st.caption(
        "Percentiles per minute from histograms (within ~9 % above the exact value). Wait: "
        "from when the job could run until a worker started it; run: the handler."
    )
    st.subheader("By job type")
    table = types_table(stats)
    if table.empty:
        st.info(f"Nothing happened in this queue in the last {window}.")
    else:
        st.table(table.set_index("job type"))


def _minute(value: str) -> datetime:
    parsed = datetime.fromisoformat(value).astimezone(UTC)
    return parsed.replace(second=0, microsecond=0)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
