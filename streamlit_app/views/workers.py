"""Workers: every worker seen in the heartbeat stream, its health, load and counters.

Health is the gateway's verdict from the last heartbeat (``ferrisqueue.domain.workers.health``):
healthy (a heartbeat within three intervals), stale (missed three), gone (stopped cleanly or
silent for a minute and twelve intervals).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from ferrisqueue.domain.events import utcnow
from streamlit_app import data
from streamlit_app.display import HEALTH_STYLES, cell_style, clock, duration, seconds_between

HEALTH_ORDER = {"stale": 0, "healthy": 1, "gone": 2}


def workers_table(workers: list[dict[str, Any]], now: datetime | None = None) -> pd.DataFrame:
    """One row per worker, stale ones first (they need a look), then healthy, then gone."""
    now = now or utcnow()
    ordered = sorted(workers, key=lambda w: (HEALTH_ORDER.get(w["health"], 3), w["worker_id"]))
    return pd.DataFrame(
        [
            {
                "worker": w["worker_id"],
                "health": w["health"],
                "queues": ", ".join(w["queues"]),
                "in flight": f"{w['in_flight']} / {w['concurrency']}",
                "processed": w["processed"],
                "failed": w["failed"],
                "last seen": f"{duration(seconds_between(w['last_seen_at'], now))} ago",
                "started": clock(w["started_at"]),
                "host": w["hostname"],
                "pid": w["pid"],
            }
            for w in ordered
        ],
        columns=[
            "worker",
            "health",
            "queues",
            "in flight",
            "processed",
            "failed",
            "last seen",
            "started",
            "host",
            "pid",
        ],
    )


def render() -> None:
    url = data.gateway_url()
    st.title("Workers")
    with data.section(url, "the workers"):
        show_workers(data.workers(url))


def show_workers(workers: list[dict[str, Any]]) -> None:
    counts = {h: sum(w["health"] == h for w in workers) for h in ("healthy", "stale", "gone")}
    columns = st.columns(4)
    columns[0].metric("Healthy", counts["healthy"], border=True)
    columns[1].metric("Stale", counts["stale"], border=True)
    columns[2].metric("Gone", counts["gone"], border=True)
    columns[3].metric(
        "Jobs in flight", sum(w["in_flight"] for w in workers if w["health"] != "gone")
    )
    if counts["stale"]:
        stale = ", ".join(w["worker_id"] for w in workers if w["health"] == "stale")
        st.warning(
            f"Stale: {stale}. Missed three heartbeats: a busy event loop, network trouble, "
            "or a process about to be gone. Its jobs run again elsewhere once their lease "
            "(FQ_ACK_WAIT) runs out."
        )
    if not workers:
        st.info("No worker has sent a heartbeat yet. Start one with `python -m worker`.")
        return
    if not counts["healthy"]:
        st.error("No healthy worker: nothing is running jobs.")
    hide_gone = st.toggle("Hide gone workers", value=False, key="workers_hide_gone")
    shown = [w for w in workers if not (hide_gone and w["health"] == "gone")]
    table = workers_table(shown)
    st.dataframe(table.style.map(cell_style(HEALTH_STYLES), subset=["health"]), hide_index=True)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
