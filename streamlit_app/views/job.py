"""A job's page (``?job=<id>``): its payload and result, each attempt with its worker,
duration and error, the event timeline with who caused each event, and the operator
actions that fit (cancel, run again, purge).

Status comes from ``GET /jobs/{id}/status`` (the read store, or the log while the
projection is behind), everything else from the job's audit trail ``GET /jobs/{id}/events``,
read from the event log itself: every stored message, its actor, and whether the fold
applied it. A rejected event (recorded, but not a legal transition: a late ``succeeded``
after a cancel, a duplicate ``started``...) is shown with the fold's note.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ferrisqueue.domain.events import utcnow
from streamlit_app import actions, data, live
from streamlit_app.client import GatewayRefused
from streamlit_app.display import milliseconds, parse_time, status_label, when

AREA = "job"
ATTEMPT_COLUMNS = ["attempt", "worker", "started", "duration", "outcome", "error"]
TIMELINE_COLUMNS = ["seq", "at (UTC)", "after", "event", "actor", "applied", "status after", "note"]


def attempts_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per attempt (a ``started`` event): its worker, how long it ran and how it
    ended. An attempt followed by another with no outcome of its own was lost (its worker
    died or lost its lease)."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in events:
        body = entry.get("body") or {}
        attempt = body.get("attempt")
        if not entry["applied"] or not attempt:
            continue
        if entry["event"] == "started":
            for earlier in rows.values():
                if earlier["outcome"] == "running":
                    earlier["outcome"] = "lost (no outcome recorded)"
            rows[attempt] = {
                "attempt": attempt,
                "worker": body.get("worker", ""),
                "started": _clock_ms(entry["at"]),
                "duration": "",
                "outcome": "running",
                "error": "",
                "_at": parse_time(entry["at"]),
            }
        elif entry["event"] in ("succeeded", "failed") and attempt in rows:
            row = rows[attempt]
            row["outcome"] = entry["event"]
            ms = body.get("duration_ms")
            if ms is None and row["_at"] is not None:
                ended = parse_time(entry["at"])
                ms = (ended - row["_at"]).total_seconds() * 1000 if ended else None
            row["duration"] = milliseconds(ms)
            if entry["event"] == "failed":
                row["error"] = f"{body.get('error_type', 'Error')}: {body.get('error', '')}"
                if body.get("retry_at"):
                    row["outcome"] = f"failed, retry at {_clock_ms(body['retry_at'])}"
    for entry in events:  # a cancel ends the attempt that was running
        if entry["event"] == "canceled" and entry["applied"]:
            for row in rows.values():
                if row["outcome"] == "running":
                    row["outcome"] = "canceled"
    return pd.DataFrame(
        [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows.values()],
        columns=ATTEMPT_COLUMNS,
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
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)


def rejected_notes(events: list[dict[str, Any]]) -> list[str]:
    """One line per event the fold did not apply, with its reason."""
    return [
        f"Event #{entry['seq']} `{entry['event']}` was recorded but not applied: "
        f"{entry.get('note') or 'no reason given'}"
        for entry in events
        if not entry["applied"]
    ]


def payload_of(events: list[dict[str, Any]]) -> Any:
    """The payload the job was submitted with (its ``submitted``/``scheduled`` event)."""
    for entry in events:
        if entry["event"] in ("submitted", "scheduled") and entry.get("body"):
            return entry["body"].get("payload", {})
    return None


def render() -> None:
    url = data.gateway_url()
    st.title("Job")
    job_id = st.text_input(
        "Job id",
        value=str(st.query_params.get("job", "")),
        placeholder="Paste a job id, or select a job in any table",
        key="job_id",
    ).strip()
    if not job_id:
        st.info("Select a job on the Jobs or Errors page, or paste its id.")
        return
    if st.query_params.get("job") != job_id:
        st.query_params["job"] = job_id  # the URL names the job shown: shareable
    with data.section(url, f"job {job_id}"):
        try:
            job = data.job_status(url, job_id)
        except GatewayRefused as exc:
            if exc.status_code in (404, 422):
                st.warning(f"No job `{job_id}`: {exc.reason}")
                return
            raise
        show_actions(job)

        def details() -> None:
            with data.section(url, f"job {job_id}"):
                show_job(url, job_id)

        live.fragment(details)


def show_actions(job: dict[str, Any]) -> None:
    """Cancel while it may still run; run again and purge while it is dead-lettered."""
    job_id = job["job_id"]
    columns = st.columns(4)
    with columns[0]:
        actions.button(
            "Cancel job",
            actions.cancel(job_id),
            key="job_cancel",
            area=AREA,
            icon=":material/cancel:",
            disabled=job["status"] not in ("pending", "running"),
            confirm=f"Cancel job `{job_id}`? A pending job never runs; a running one is "
            "stopped by its worker.",
        )
    with columns[1]:
        actions.button(
            "Run again",
            actions.dead_letter("redrive", job_id),
            key="job_redrive",
            area=AREA,
            icon=":material/replay:",
            disabled=not job["dead_lettered"],
            help="Redrive the dead letter: the job runs again (attempt n + 1).",
            confirm=f"Run job `{job_id}` again? It leaves the dead letters and is pending "
            "again at once.",
        )
    with columns[2]:
        actions.button(
            "Purge dead letter",
            actions.dead_letter("purge", job_id),
            key="job_purge",
            area=AREA,
            icon=":material/delete:",
            disabled=not job["dead_lettered"],
            confirm=f"Purge the dead letter of job `{job_id}`? It stays failed for good "
            "(its history stays in the log).",
        )
    actions.show_outcome(AREA)


def show_job(url: str, job_id: str) -> None:
    job = data.job_status(url, job_id)
    events = data.job_events(url, job_id)
    now = utcnow()
    columns = st.columns(4)
    columns[0].metric("Status", status_label(job["status"], job.get("pending_reason")))
    columns[1].metric("Attempts", job["attempts"])
    columns[2].metric("Worker", job.get("worker") or "—")
    progress = job.get("progress")
    columns[3].metric("Progress", "—" if progress is None else f"{progress:.0%}")
    times = [
        f"Queue `{job['queue']}` · type `{job['type']}`",
        f"created {when(job['created_at'], now)}",
        f"started {when(job.get('started_at'), now)}",
        f"finished {when(job.get('finished_at'), now)}",
    ]
    if job.get("run_at"):
        times.append(f"runs {when(job['run_at'], now)}")
    if job.get("retry_at"):
        times.append(f"retries {when(job['retry_at'], now)}")
    if job.get("cancel_requested"):
        times.append("cancel requested")
    if job.get("dead_lettered"):
        times.append("dead-lettered")
    if job["source"] != "read_store":
        times.append("read from the event log (projection behind)")
    st.markdown(" · ".join(times), unsafe_allow_html=True, help="Hover a time for UTC.")
    if job.get("last_error"):
        if job["status"] == "failed":
            st.error(f"Last error: {job['last_error']}")
        else:  # a retried job: the error of an earlier attempt
            st.info(f"Error of an earlier attempt: {job['last_error']}")
    left, right = st.columns(2)
    with left:
        st.subheader("Payload")
        st.json(payload_of(events), expanded=True)
    with right:
        st.subheader("Result")
        if job.get("result") is None:
            st.caption("None yet." if job["status"] != "completed" else "None.")
        else:
            st.json(job["result"], expanded=True)

    st.subheader("Attempts")
    attempts = attempts_table(events)
    if attempts.empty:
        st.caption("No attempt yet.")
    else:
        st.dataframe(
            attempts,
            hide_index=True,
            key="job_attempts",
            column_config={"error": st.column_config.TextColumn(width="large")},
        )

    st.subheader("Timeline")
    st.caption("Every event of the job in the log, oldest first, with who caused it.")
    for note in rejected_notes(events):
        st.warning(note)
    st.dataframe(
        timeline_table(events).style.apply(_highlight_rejected, axis=1),
        hide_index=True,
        key="job_timeline",
        column_config={"note": st.column_config.TextColumn(width="large")},
    )
    with st.expander("Raw events"):
        st.json(events, expanded=False)


def _clock_ms(value: str) -> str:
    parsed = parse_time(value)
    return parsed.strftime("%H:%M:%S.%f")[:-3] if parsed else ""


def _highlight_rejected(row: pd.Series) -> list[str]:
    css = "background-color: #ffe0b2" if row["applied"] != "✓" else ""
    return [css] * len(row)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
