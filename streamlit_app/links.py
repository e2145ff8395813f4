"""Every table of jobs links to the job's page: selecting a row opens ``views/job.py`` with
``?job=<id>`` (a URL to share). ``st.switch_page`` keeps the browser session, so a key login
is not asked again, as it would be after a plain link's full page load."""

from __future__ import annotations

from typing import Any

import streamlit as st

JOB_PAGE = "views/job.py"


def job_table(
    table: Any, rows: list[dict[str, Any]], *, key: str, column_config: dict[str, Any] | None = None
) -> None:
    """``table`` (a DataFrame or Styler) of ``rows`` (each with a ``job_id``), one row
    selectable: selecting it opens that job's page."""
    selected = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=key,
        column_config=column_config,
    )
    open_selected(selected, rows)


def open_selected(selected: Any, rows: list[dict[str, Any]]) -> None:
    """Open the job of the row selected in ``selected`` (an ``st.dataframe`` answer), if any."""
    chosen = selected.selection.rows if selected is not None else []
    if chosen:
        st.switch_page(JOB_PAGE, query_params={"job": rows[chosen[0]]["job_id"]})
