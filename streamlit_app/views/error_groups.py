"""Error groups: failed attempts grouped by error type and message, the most frequent first,
with counts, a trend over the window, and the jobs each group hit.

From ``GET /errors`` (one row per failed attempt in the read store's ``job_errors``, grouped)
and ``GET /errors/{key}/attempts`` (a group's attempts, newest first, paged). Select a group
to list its jobs; select a job to open it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data, links
from streamlit_app.display import STATUS_STYLES, cell_style, clock
from streamlit_app.paging import pager, pager_buttons

WINDOWS = {"1 hour": 60, "6 hours": 360, "24 hours": 1440, "7 days": 10080}
PAGE_SIZE = 50


def groups_table(groups: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "error type": group["error_type"],
                "message": group["message"],
                "failed attempts": group["attempts"],
                "jobs": group["jobs"],
                "failed for good": group["final"],
                "trend": group["trend"],
                "last seen": clock(group["last_at"]),
                "first seen": clock(group["first_at"]),
            }
            for group in groups
        ],
        columns=[
            "error type",
            "message",
            "failed attempts",
            "jobs",
            "failed for good",
            "trend",
            "last seen",
            "first seen",
        ],
    )


def attempts_table(attempts: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": attempt["job_id"],
                "failed at": clock(attempt["at"]),
                "queue": attempt["queue"],
                "type": attempt["type"],
                "then": "failed for good" if attempt["final"] else "retried",
                "job status now": attempt["status"] or "gone (cleaned up)",
            }
            for attempt in attempts
        ],
        columns=["job", "failed at", "queue", "type", "then", "job status now"],
    )


def render() -> None:
    url = data.gateway_url()
    st.title("Error groups")
    window = st.segmented_control(
        "Window", list(WINDOWS), default="24 hours", key="error_groups_window"
    )
    window = window or "24 hours"
    with data.section(url, "the error groups"):
        answer = data.error_groups(url, minutes=WINDOWS[window])
        groups = answer["groups"]
        columns = st.columns(3)
        columns[0].metric("Distinct errors", len(groups), border=True)
        columns[1].metric("Failed attempts", sum(g["attempts"] for g in groups), border=True)
        columns[2].metric("Failed for good", sum(g["final"] for g in groups), border=True)
        if not groups:
            st.success(f"No failed attempt in the last {window}.")
            return
        bucket = answer["bucket_seconds"] / 60
        chosen = st.dataframe(
            groups_table(groups),
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key="error_groups_list",
            column_config={
                "message": st.column_config.TextColumn(width="medium"),
                "trend": st.column_config.BarChartColumn(
                    f"trend ({bucket:g} min per bar)", y_min=0
                ),
            },
        )
        st.caption("Select an error to list the jobs it hit.")
        rows = chosen.selection.rows if chosen is not None else []
        if rows:
            show_attempts(url, groups[rows[0]])


def show_attempts(url: str, group: dict[str, Any]) -> None:
    st.subheader(f"Jobs that failed with {group['error_type']}")
    st.code(group["message"], language=None)
    cursors = pager("error_attempts", group["key"])
    page = data.error_attempts(url, group["key"], cursor=cursors[-1], limit=PAGE_SIZE)
    attempts = page["items"]
    links.job_table(
        attempts_table(attempts).style.map(cell_style(STATUS_STYLES), subset=["job status now"]),
        attempts,
        key="error_attempts_list",
    )
    pager_buttons(
        "error_attempts", cursors, page["next_cursor"], f"{len(attempts)} attempts, newest first"
    )


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
