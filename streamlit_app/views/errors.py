"""Errors: the newest failed jobs with their last error, and the dead letters.

Failed jobs come from ``GET /jobs?status=failed`` (the read store; newest first), dead
letters from ``GET /dead-letters`` (jobs or undecodable messages the system gave up on),
filtered by queue and by text in the reason or last error.
Select a row to open that job's page.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from streamlit_app import data, links
from streamlit_app.display import clock

LIMIT = 100
ANY = "any"


def failed_table(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": job["job_id"],
                "queue": job["queue"],
                "type": job["type"],
                "attempts": job["attempts"],
                "finished": clock(job.get("finished_at") or job.get("updated_at")),
                "last error": job.get("last_error") or "",
            }
            for job in jobs
        ],
        columns=["job", "queue", "type", "attempts", "finished", "last error"],
    )


def dead_letter_table(letters: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": letter["job_id"],
                "queue": letter["queue"],
                "type": letter["type"],
                "reason": letter["reason"],
                "attempts": letter["attempts"],
                "dead-lettered": clock(letter["dead_lettered_at"]),
                "resolved": _resolution(letter),
            }
            for letter in letters
        ],
        columns=["job", "queue", "type", "reason", "attempts", "dead-lettered", "resolved"],
    )


def _resolution(letter: dict[str, Any]) -> str:
    if not letter.get("resolution"):
        return ""
    return f"{letter['resolution']} by {letter['resolved_by']} {clock(letter['resolved_at'])}"


def render() -> None:
    url = data.gateway_url()
    st.title("Errors")
    with data.section(url, "the failed jobs"):
        page = data.jobs(url, status="failed", limit=LIMIT)
        show_failed(page["items"], more=page["next_cursor"] is not None)
    st.subheader("Dead letters")
    with data.section(url, "the dead letters"):
        columns = st.columns([1, 2, 1])
        queue = columns[0].selectbox("Queue", [ANY, *data.queue_names(url)], key="errors_queue")
        reason = (
            columns[1]
            .text_input("Reason or error contains", placeholder="any", key="errors_reason")
            .strip()
        )
        include = columns[2].toggle(
            "Include redriven and purged", value=False, key="errors_include_resolved"
        )
        letters = data.dead_letters(
            url,
            queue=None if queue == ANY else queue,
            reason=reason or None,
            include_resolved=include,
            limit=LIMIT,
        )
        show_dead_letters(letters["items"], more=letters["next_cursor"] is not None)


def show_failed(jobs: list[dict[str, Any]], *, more: bool) -> None:
    st.subheader("Failed jobs")
    if not jobs:
        st.success("No failed job.")
        return
    st.caption(
        f"The newest {len(jobs)}{' (there are more: see Jobs)' if more else ''}, with the "
        "error of their last attempt. Select one to open its page."
    )
    _selectable(failed_table(jobs), jobs, key="errors_failed", wide=("last error", "large"))


def show_dead_letters(letters: list[dict[str, Any]], *, more: bool = False) -> None:
    if not letters:
        st.success("No dead letter.")
        return
    st.caption(
        f"The newest {len(letters)}{' (there are more: narrow the filters)' if more else ''}: "
        "messages the system gave up on (out of deliveries or attempts, or undecodable). "
        "Redrive or purge them on the job's page, a filtered selection of them on Operate."
    )
    _selectable(
        dead_letter_table(letters), letters, key="errors_dead_letters", wide=("reason", "medium")
    )


def _selectable(table: Any, rows: list[dict[str, Any]], *, key: str, wide: tuple[str, str]) -> None:
    """``table`` of ``rows``, one selectable at a time; selecting one opens its job. The
    ``wide`` column (name, width) holds the long text."""
    column, width = wide
    config = {column: st.column_config.TextColumn(width=width)}
    links.job_table(table, rows, key=key, column_config=config)


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
