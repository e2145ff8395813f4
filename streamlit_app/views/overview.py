"""Overview: queue lengths, throughput per minute, latency percentiles, projection lag.

Queue counts come from ``GET /queues``; throughput and latency from ``GET /stats/throughput`` (per
minute, by queue and type; latencies are histogram percentiles in ms, merged by the gateway
over the whole window); lag from ``GET /projections``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from ferrisqueue.domain.events import utcnow
from streamlit_app import data
from streamlit_app.display import clock, duration, milliseconds, seconds_between

WINDOWS = {"15 minutes": 15, "1 hour": 60, "6 hours": 360, "24 hours": 1440}
# A projection behind its stream that has applied nothing for this long gets a warning.
# (A comment, not an attribute docstring: Streamlit's "magic" would print a bare string
# in a page script.)
LAG_STALE_SECONDS = 30.0


def queue_table(queues: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per queue: jobs per status and the total (``pending`` is the queue length)."""
    rows = [
        {
            "queue": row["queue"],
            **{status: int(row["counts"].get(status, 0)) for status in data.STATUSES},
            "total": sum(int(n) for n in row["counts"].values()),
        }
        for row in queues
    ]
    return pd.DataFrame(rows, columns=["queue", *data.STATUSES, "total"]).set_index("queue")


def throughput_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Jobs finished (succeeded and failed) per minute over the whole window, 0 where none."""
    since = _minute(metrics["since"])
    until = _minute(metrics["until"])
    index = pd.date_range(since, until, freq="min", name="minute (UTC)")
    # Summed with pandas: a row per minute, queue and type is thousands of rows an hour,
    # and adding them cell by cell took a few hundred ms at 100,000 jobs.
    rows = pd.DataFrame(metrics["minutes"], columns=["minute", "succeeded", "failed"])
    rows["minute"] = pd.to_datetime(rows["minute"], utc=True).dt.floor("min")
    sums = rows.groupby("minute")[["succeeded", "failed"]].sum()
    return sums.reindex(index).fillna(0).astype(int)


def latency_table(totals: dict[str, Any]) -> pd.DataFrame:
    """Wait (submitted → started) and run (started → finished) p50/p95/p99, formatted."""
    rows = {
        "wait (queued → started)": "wait_ms",
        "run (started → finished)": "run_ms",
    }
    return pd.DataFrame(
        {
            f"p{q}": [milliseconds(totals.get(f"{key}_p{q}")) for key in rows.values()]
            for q in (50, 95, 99)
        },
        index=pd.Index(list(rows), name="latency"),
    )


def lag_problems(projections: list[dict[str, Any]], now: datetime) -> list[str]:
    """Warnings for projections that are behind and not moving, or whose lag is unknown."""
    problems = []
    for row in projections:
        lag = row.get("lag_events")
        name = row["name"]
        if lag is None:
            problems.append(
                f"Projection **{name}**: lag unknown, the gateway cannot reach NATS "
                f"(applied up to sequence {row['position']})."
            )
            continue
        idle = seconds_between(row.get("last_applied_at"), now)
        if lag > 0 and (idle is None or idle > LAG_STALE_SECONDS):
            problems.append(
                f"Projection **{name}** is {lag} events behind `{row['stream']}` and has "
                f"applied nothing for {duration(idle)}: is the projector "
                "(`python -m projections`) running? Until it catches up, lists and counts "
                "here are stale."
            )
        if row.get("parked_events"):
            problems.append(
                f"Projection **{name}** parked {row['parked_events']} undecodable message(s) "
                "in job timelines instead of applying them (see Errors → Dead letters)."
            )
        if row.get("orphan_events"):
            problems.append(
                f"Projection **{name}** received {row['orphan_events']} event(s) for jobs it "
                f"never saw created (latest: {row.get('last_problem')}). Check the store "
                "against the log with `fq projections verify`."
            )
    return problems


def render() -> None:
    url = data.gateway_url()
    st.title("Overview")

    with data.section(url, "the queues"):
        show_queues(data.queues(url))

    window_name = st.segmented_control(
        "Window", list(WINDOWS), default="1 hour", key="overview_window"
    )
    minutes = WINDOWS[window_name or "1 hour"]
    with data.section(url, "the metrics"):
        show_metrics(data.metrics(url, minutes=minutes), window_name or "1 hour")

    with data.section(url, "the projections"):
        show_projections(data.projections(url))


def show_queues(queues: list[dict[str, Any]]) -> None:
    st.subheader("Queues")
    table = queue_table(queues)
    pending = int(table["pending"].sum())
    columns = st.columns(4)
    columns[0].metric("Queue length (pending)", pending, border=True)
    columns[1].metric("Running", int(table["running"].sum()), border=True)
    columns[2].metric("Completed", int(table["completed"].sum()), border=True)
    columns[3].metric("Failed", int(table["failed"].sum()), border=True)
    if table.empty:
        st.info("No jobs yet. Submit one on the Submit page or with `fq submit echo`.")
        return
    st.table(table)


def show_metrics(metrics: dict[str, Any], window: str) -> None:
    totals = metrics["totals"]
    st.subheader(f"Throughput, last {window}")
    finished = int((totals.get("succeeded") or 0) + (totals.get("failed") or 0))
    columns = st.columns(4)
    # Jobs and attempts apart: a retried job is one job submitted but several attempts
    # finished, so "attempts finished" may exceed "jobs submitted".
    columns[0].metric(
        "Jobs submitted", int(totals.get("submitted") or 0), help="Jobs created in the window."
    )
    columns[1].metric(
        "Attempts finished",
        finished,
        help="Attempts that ended: succeeded + failed (the chart's bars). A retried job "
        "counts once per attempt.",
    )
    columns[2].metric(
        "Attempts failed",
        int(totals.get("failed") or 0),
        help="Including attempts that will be retried.",
    )
    columns[3].metric(
        "Jobs dead-lettered",
        int(totals.get("dead_lettered") or 0),
        help="Jobs given up on: out of attempts, or undecodable.",
    )
    frame = throughput_frame(metrics)
    st.bar_chart(
        frame,
        y=["succeeded", "failed"],
        color=["#2e7d32", "#c62828"],
        x_label="minute (UTC)",
        y_label="attempts finished",
        height=260,
    )
    st.subheader(f"Latency, last {window}")
    st.table(latency_table(totals))
    st.caption(
        "Percentiles over every job in the window, from histograms (within ~9 % above the "
        "exact value). Wait: submitted (or due) until a worker started it; run: the handler."
    )


def show_projections(projections: list[dict[str, Any]]) -> None:
    st.subheader("Projections")
    now = utcnow()
    for problem in lag_problems(projections, now):
        st.warning(problem)
    rows = [
        {
            "projection": row["name"],
            "stream": row["stream"],
            "applied up to": row["position"],
            "newest in log": row.get("stream_last_seq"),
            "lag (events)": row.get("lag_events"),
            **({"parked": row["parked_events"]} if "parked_events" in row else {}),
            "lost deliveries (refilled)": row.get("lost_deliveries", 0),
            "last applied": clock(row.get("last_applied_at")),
            "ago": duration(seconds_between(row.get("last_applied_at"), now)),
        }
        for row in projections
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def _minute(value: str) -> datetime:
    parsed = datetime.fromisoformat(value).astimezone(UTC)
    return parsed.replace(second=0, microsecond=0)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
