"""The link from a row of a page's table to the job page (``views/jobs.py?job=<id>``):
select a row, follow the link that appears. An ``st.page_link``, not an anchor in the
table, so the browser session (and its login) stays."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st


def selectable(table: pd.DataFrame | Any, job_ids: list[str], *, key: str, **options: Any) -> None:
    """``table`` (a frame or Styler), one row per id of ``job_ids``; selecting a row shows a
    link to that job's page. ``options`` go to ``st.dataframe``."""
    selected = st.dataframe(
        table, hide_index=True, on_select="rerun", selection_mode="single-row", key=key, **options
    )
    rows = selected.selection.rows if selected is not None else []
    if rows:
        job_id = job_ids[rows[0]]
        st.page_link(
            "views/jobs.py",
            label=f"Open job {job_id}",
            icon=":material/open_in_new:",
            query_params={"job": job_id},
        )


def pager(key: str, reset_on: object) -> list[str | None]:
    """A stack of keyset cursors (the first page's is None) kept in the session, reset when
    ``reset_on`` (the filters) changes; pass it to :func:`pager_buttons` after the list."""
    if st.session_state.get(f"{key}_filters") != reset_on:
        st.session_state[f"{key}_filters"] = reset_on
        st.session_state[f"{key}_cursors"] = [None]
    cursors: list[str | None] = st.session_state[f"{key}_cursors"]
    return cursors


def pager_buttons(key: str, cursors: list[str | None], next_cursor: str | None, what: str) -> None:
    """Previous and next buttons under a page of a list, and which page this is."""
    left, middle, right = st.columns([1, 2, 1])
    if left.button("← Previous", disabled=len(cursors) == 1, key=f"{key}_previous"):
        cursors.pop()
        st.rerun()
    middle.caption(f"Page {len(cursors)} · {what}")
    if right.button("Next →", disabled=next_cursor is None, key=f"{key}_next"):
        cursors.append(next_cursor)
        st.rerun()
