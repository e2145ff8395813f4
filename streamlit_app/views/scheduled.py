"""Scheduled: the jobs that wait for a time, soonest first, with their due times: delayed
jobs (``run_at``) and retries waiting after a failed attempt (``retry_at``).

From ``GET /jobs/waiting`` (the read store, an index range per page; paged by keyset).
Select a row to open the job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from ferrisqueue.domain.events import utcnow
from streamlit_app import data, links
from streamlit_app.display import clock, duration, parse_time
from streamlit_app.paging import pager, pager_buttons

PAGE_SIZE = 50
KINDS = {"Delayed": "scheduled", "Retries waiting": "retrying"}
COLUMNS = [
    "job",
    "queue",
    "type",
    "due (UTC)",
    "due in",
    "attempts so far",
    "last error",
    "created",
]


def waiting_table(jobs: list[dict[str, Any]], reason: str, now: datetime) -> pd.DataFrame:
    """One row per job: when it is due (UTC) and in how long; a retry's attempts and error."""
    due_field = "run_at" if reason == "scheduled" else "retry_at"
    rows = []
    for job in jobs:
        due = parse_time(job.get(due_field))
        rows.append(
            {
                "job": job["job_id"],
                "queue": job["queue"],
                "type": job["type"],
                "due (UTC)": clock(job.get(due_field)),
                "due in": _until(due, now),
                "attempts so far": job["attempts"],
                "last error": job.get("last_error") or "",
                "created": clock(job["created_at"]),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.drop(columns=["attempts so far", "last error"]) if reason == "scheduled" else frame


def _until(due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    seconds = (due - now).total_seconds()
    return f"in {duration(seconds)}" if seconds >= 0 else f"overdue by {duration(-seconds)}"


def render() -> None:
    url = data.gateway_url()
    st.title("Scheduled")
    st.caption("Jobs that wait for a time: delayed jobs, and retries waiting after a failure.")
    kind = st.segmented_control("Show", list(KINDS), default="Delayed", key="scheduled_kind")
    reason = KINDS[kind or "Delayed"]
    with data.section(url, "the waiting jobs"):
        cursors = pager("scheduled", reason)
        page = data.waiting_jobs(url, reason=reason, cursor=cursors[-1], limit=PAGE_SIZE)
        counts = page["counts"]
        columns = st.columns(2)
        columns[0].metric("Delayed", counts.get("scheduled", 0), border=True)
        columns[1].metric("Retries waiting", counts.get("retrying", 0), border=True)
        jobs = page["items"]
        if not jobs:
            st.info(
                "No delayed job. Submit one with a `delay` or `run_at`, e.g. "
                "`fq submit echo --delay 60`."
                if reason == "scheduled"
                else "No retry is waiting."
            )
            return
        links.job_table(
            waiting_table(jobs, reason, utcnow()),
            jobs,
            key="scheduled_list",
        )
        pager_buttons("scheduled", cursors, page["next_cursor"], f"{len(jobs)} jobs, soonest first")


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
