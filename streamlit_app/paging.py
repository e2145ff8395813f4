"""Keyset paging of a page's list: a stack of cursors kept in the session, and the previous /
next buttons under the list."""

from __future__ import annotations

import streamlit as st


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
