"""Cron: every periodic schedule with its next runs and the outcome of its last job.

Schedules and their next fire times come from ``GET /schedules`` (the ``FQ_CRON`` bucket, so
it needs NATS); each schedule's newest jobs from ``GET /schedules/{name}/jobs`` (the read
store: the jobs whose actor is ``cron:<name>``). Select a schedule to see its recent jobs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data, links
from streamlit_app.display import STATUS_STYLES, cell_style, clock, status_label

RECENT = 5


def schedule_table(schedules: list[dict[str, Any]], recent: dict[str, list[Any]]) -> pd.DataFrame:
    """One row per schedule; ``recent``: each schedule's newest jobs, newest first."""
    rows = []
    for schedule in schedules:
        jobs = recent.get(schedule["name"], [])
        last = jobs[0] if jobs else None
        rows.append(
            {
                "schedule": schedule["name"],
                "when": schedule["schedule"]
                + (f" ({schedule['timezone']})" if schedule.get("timezone") else ""),
                "job type": schedule["job"]["type"],
                "state": "paused" if schedule["paused"] else "active",
                "next runs (UTC)": ", ".join(clock(t) for t in schedule["next_fires"]) or "—",
                "last outcome": status_label(last["status"], last.get("pending_reason"))
                if last
                else "no job yet",
                "last run": clock(last["created_at"]) if last else "",
                "last job": last["job_id"] if last else "",
            }
        )
    columns = ["schedule", "when", "job type", "state", "next runs (UTC)", "last outcome"]
    return pd.DataFrame(rows, columns=[*columns, "last run", "last job"])


def recent_table(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job["job_id"],
                "status": status_label(job["status"], job.get("pending_reason")),
                "created": clock(job["created_at"]),
                "finished": clock(job.get("finished_at")),
                "attempts": job["attempts"],
                "last error": job.get("last_error") or "",
            }
            for job in jobs
        ],
        columns=["job", "status", "created", "finished", "attempts", "last error"],
    )


def render() -> None:
    url = data.gateway_url()
    st.title("Cron")
    with data.section(url, "the schedules"):
        schedules = data.schedules(url, next=3)
        if not schedules:
            st.info(
                "No schedule. Add one with `fq cron add heartbeat '@every 30s' echo` or "
                "`POST /schedules`."
            )
            return
        recent = {s["name"]: data.schedule_jobs(url, s["name"], limit=RECENT) for s in schedules}
        paused = sum(1 for s in schedules if s["paused"])
        columns = st.columns(2)
        columns[0].metric("Active schedules", len(schedules) - paused, border=True)
        columns[1].metric("Paused", paused, border=True)
        table = schedule_table(schedules, recent)
        chosen = st.dataframe(
            table.style.map(cell_style(STATUS_STYLES), subset=["last outcome"]),
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key="cron_list",
            column_config={"next runs (UTC)": st.column_config.TextColumn(width="large")},
        )
        st.caption("Select a schedule to see its recent jobs.")
        rows = chosen.selection.rows if chosen is not None else []
        if rows:
            name = schedules[rows[0]]["name"]
            jobs = recent[name]
            st.subheader(f"Recent jobs of `{name}`")
            if not jobs:
                st.info("It has created no job yet.")
                return
            links.job_table(
                recent_table(jobs).style.map(cell_style(STATUS_STYLES), subset=["status"]),
                jobs,
                key="cron_recent",
            )


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
