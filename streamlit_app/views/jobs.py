"""Jobs: a filterable, paged list (``GET /jobs``) and one job's status and timeline.

The timeline is the job's audit trail (``GET /jobs/{id}/events``), read from the event log
itself: every stored message, who sent it, and whether the fold applied it. A rejected event
(recorded, but not a legal transition: a late ``succeeded`` after a cancel, a duplicate
``started``...) is shown with the fold's note. Open a job from elsewhere with ``?job=<id>``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data
from streamlit_app.client import GatewayRefused
from streamlit_app.display import STATUS_STYLES, cell_style, clock, parse_time, status_label

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
                "created": clock(job["created_at"]),
                "finished": clock(job.get("finished_at")),
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


def timeline_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """The audit trail, oldest first, with the time since the first message."""
    first = parse_time(events[0]["at"]) if events else None
    rows = []
    for entry in events:
        at = parse_time(entry["at"])
        rows.append(
            {
                "seq": entry["seq"],
                "at (UTC)": at.strftime("%H:%M:%S.%f")[:-3] if at else "",
                "after": f"+{(at - first).total_seconds():.3f} s" if at and first else "",
                "event": entry["event"],
                "actor": entry.get("actor") or "",
                "applied": "✓" if entry["applied"] else "✗ rejected",
                "status after": entry.get("status_after") or "",
                "note": entry.get("note") or "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=["seq", "at (UTC)", "after", "event", "actor", "applied", "status after", "note"],
    )


def rejected_notes(events: list[dict[str, Any]]) -> list[str]:
    """One line per event the fold did not apply, with its reason."""
    return [
        f"Event #{entry['seq']} `{entry['event']}` was recorded but not applied: "
        f"{entry.get('note') or 'no reason given'}"
        for entry in events
        if not entry["applied"]
    ]


def _highlight_rejected(row: pd.Series) -> list[str]:
    css = "background-color: #ffe0b2" if row["applied"] != "✓" else ""
    return [css] * len(row)


def render() -> None:
    url = data.gateway_url()
    st.title("Jobs")
    wanted = st.text_input(
        "Job id",
        value=str(st.query_params.get("job", "")),
        placeholder="Paste a job id, or select a row below",
        key="jobs_job_id",
    ).strip()
    detail = st.container()  # filled last: a row selected in the list below shows up here
    st.subheader("All jobs")
    selected: str | None = None
    with data.section(url, "the jobs"):
        selected = show_list(url)
    job_id = selected or wanted
    if job_id:
        with detail, data.section(url, f"job {job_id}"):
            show_job(url, job_id)


def show_list(url: str) -> str | None:
    """The filters, one page of jobs and paging; returns the selected row's job id."""
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
        return None
    chosen = st.dataframe(
        jobs_table(jobs).style.map(cell_style(STATUS_STYLES), subset=["status"]),
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="jobs_list",
    )
    left, middle, right = st.columns([1, 2, 1])
    if left.button("← Newer", disabled=len(cursors) == 1, key="jobs_newer"):
        cursors.pop()
        st.rerun()
    middle.caption(f"Page {len(cursors)} · {len(jobs)} jobs, newest first")
    if right.button("Older →", disabled=page["next_cursor"] is None, key="jobs_older"):
        cursors.append(page["next_cursor"])
        st.rerun()
    rows = chosen.selection.rows if chosen is not None else []
    return str(jobs[rows[0]]["job_id"]) if rows else None


def show_job(url: str, job_id: str) -> None:
    try:
        job = data.job_status(url, job_id)
    except GatewayRefused as exc:
        if exc.status_code in (404, 422):
            st.warning(f"No job `{job_id}`: {exc.reason}")
            return
        raise
    st.subheader(f"Job `{job_id}`")
    columns = st.columns(4)
    columns[0].metric("Status", status_label(job["status"], job.get("pending_reason")))
    columns[1].metric("Attempts", job["attempts"])
    columns[2].metric("Worker", job.get("worker") or "—")
    progress = job.get("progress")
    columns[3].metric("Progress", "—" if progress is None else f"{progress:.0%}")
    st.caption(
        f"Queue `{job['queue']}` · type `{job['type']}` · created {clock(job['created_at'])}"
        f" · started {clock(job.get('started_at')) or '—'}"
        f" · finished {clock(job.get('finished_at')) or '—'}"
        + (f" · runs at {clock(job['run_at'])}" if job.get("run_at") else "")
        + (f" · retries at {clock(job['retry_at'])}" if job.get("retry_at") else "")
        + (" · cancel requested" if job.get("cancel_requested") else "")
        + (
            " · read from the event log (projection behind)"
            if job["source"] != "read_store"
            else ""
        )
    )
    if job.get("last_error"):
        st.error(f"Last error: {job['last_error']}")
    if job.get("result") is not None:
        with st.expander("Result", expanded=True):
            st.json(job["result"])

    st.subheader("Timeline")
    events = data.job_events(url, job_id)
    for note in rejected_notes(events):
        st.warning(note)
    st.dataframe(
        timeline_table(events).style.apply(_highlight_rejected, axis=1),
        hide_index=True,
        column_config={"note": st.column_config.TextColumn(width="large")},
    )
    with st.expander("Raw events"):
        st.json(events, expanded=False)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
