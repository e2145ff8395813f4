"""Jobs: a filterable, paged list (``GET /jobs``), refreshed live; selecting a row opens
the job's page (``views/job.py``, ``?job=<id>``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data, links, live
from streamlit_app.display import STATUS_STYLES, cell_style, parse_time, status_label

PAGE_SIZE = 50
ANY = "any"


def jobs_table(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job["job_id"],
                "status": status_label(job["status"], job.get("pending_reason")),
                "queue": job["queue"],
                "type": job["type"],
                "attempts": job["attempts"],
                "created": parse_time(job["created_at"]),
                "finished": parse_time(job.get("finished_at")),
                "worker": job.get("worker") or "",
                "last error": job.get("last_error") or "",
            }
            for job in jobs
        ],
        columns=[
            "job",
            "status",
            "queue",
            "type",
            "attempts",
            "created",
            "finished",
            "worker",
            "last error",
        ],
    )


# Times relative to now ("3 minutes ago"); the job's page has them to the second.
TIME_COLUMNS = {
    name: st.column_config.DatetimeColumn(
        format="distance", help="Relative to now; the job's page shows the UTC time on hover."
    )
    for name in ("created", "finished")
}


def render() -> None:
    url = data.gateway_url()
    st.title("Jobs")
    st.caption("Select a job to open its page: payload, result, attempts and timeline.")

    def jobs() -> None:
        with data.section(url, "the jobs"):
            show_list(url)

    live.fragment(jobs)


def show_list(url: str) -> None:
    """The filters, one page of jobs (a row opens its job) and paging."""
    columns = st.columns(3)
    status = columns[0].selectbox("Status", [ANY, *data.STATUSES], key="jobs_status")
    queue = columns[1].selectbox("Queue", [ANY, *data.queue_names(url)], key="jobs_queue")
    job_type = columns[2].text_input("Type", placeholder="any", key="jobs_type").strip()
    filters = (status, queue, job_type)
    # Keyset paging: a stack of cursors, reset whenever the filters change.
    if st.session_state.get("jobs_filters") != filters:
        st.session_state["jobs_filters"] = filters
        st.session_state["jobs_cursors"] = [None]
    cursors: list[str | None] = st.session_state["jobs_cursors"]
    page = data.jobs(
        url,
        status=None if status == ANY else status,
        queue=None if queue == ANY else queue,
        type=job_type or None,
        cursor=cursors[-1],
        limit=PAGE_SIZE,
    )
    jobs = page["items"]
    if not jobs:
        st.info("No job matches.")
        return
    links.job_table(
        jobs_table(jobs).style.map(cell_style(STATUS_STYLES), subset=["status"]),
        jobs,
        key="jobs_list",
        column_config=TIME_COLUMNS,
    )
    left, middle, right = st.columns([1, 2, 1])
    if left.button("← Newer", disabled=len(cursors) == 1, key="jobs_newer"):
        cursors.pop()
        st.rerun()
    middle.caption(f"Page {len(cursors)} · {len(jobs)} jobs, newest first")
    if right.button("Older →", disabled=page["next_cursor"] is None, key="jobs_older"):
        cursors.append(page["next_cursor"])
        st.rerun()


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
