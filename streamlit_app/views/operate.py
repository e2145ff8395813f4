"""Operate: pause and resume queues, pause, resume and trigger cron schedules, and redrive
or purge every dead letter a filter selects (e.g. "type email since 10:00").

Every button asks for confirmation and acts with the logged-in operator's own key
(:mod:`streamlit_app.actions`); the tables refresh live, the buttons stay put meanwhile.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from ferrisqueue.domain.events import utcnow
from streamlit_app import actions, data, links, live
from streamlit_app.display import parse_since, parse_time

ANY = "any"
PREVIEW = 100
WHEN_HELP = "Relative to now; hover the job's page for UTC times."


def queues_table(queues: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "queue": q["queue"],
                "state": q["state"],
                "changed by": q.get("changed_by") or "",
                "since": parse_time(q.get("changed_at")),
                "pending": q["counts"].get("pending", 0),
                "running": q["counts"].get("running", 0),
            }
            for q in queues
        ],
        columns=["queue", "state", "changed by", "since", "pending", "running"],
    )


def schedules_table(schedules: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "schedule": s["name"],
                "when": s["schedule"] + (f" ({s['timezone']})" if s.get("timezone") else ""),
                "state": "paused" if s["paused"] else "active",
                "job": f"{s['job']['type']} on {s['job'].get('queue', 'default')}",
                "next run": parse_time(s["next_fires"][0]) if s["next_fires"] else None,
                "changed by": s.get("updated_by") or "",
            }
            for s in schedules
        ],
        columns=["schedule", "when", "state", "job", "next run", "changed by"],
    )


def render() -> None:
    url = data.gateway_url()
    st.title("Operate")
    show_queues(url)
    show_schedules(url)
    show_dead_letters(url)


def show_queues(url: str) -> None:
    st.subheader("Queues")

    def table() -> None:
        with data.section(url, "the queues"):
            st.dataframe(
                queues_table(data.queues(url)),
                hide_index=True,
                key="operate_queues",
                column_config={"since": st.column_config.DatetimeColumn(format="distance")},
            )

    live.fragment(table)
    with data.section(url, "the queues"):
        names = data.queue_names(url)
        if not names:
            return
        left, middle, right = st.columns([2, 1, 1], vertical_alignment="bottom")
        name = left.selectbox("Queue", names, key="operate_queue")
        with middle:
            actions.button(
                "Pause queue",
                actions.queue("pause", name),
                key="operate_queue_pause",
                area="queues",
                icon=":material/pause:",
                confirm=f"Pause queue `{name}`? Its workers start none of its jobs (running "
                "ones finish) until it is resumed; submits are still accepted.",
            )
        with right:
            actions.button(
                "Resume queue",
                actions.queue("resume", name),
                key="operate_queue_resume",
                area="queues",
                icon=":material/play_arrow:",
                confirm=f"Resume queue `{name}`? Its workers start its jobs again.",
            )
        actions.show_outcome("queues")


def show_schedules(url: str) -> None:
    st.subheader("Cron schedules")

    def table() -> None:
        with data.section(url, "the schedules"):
            schedules = data.schedules(url)
            if not schedules:
                st.caption("No schedule. Define one with `fq cron add` or POST /schedules.")
                return
            st.dataframe(
                schedules_table(schedules),
                hide_index=True,
                key="operate_schedules",
                column_config={
                    "next run": st.column_config.DatetimeColumn(format="distance", help=WHEN_HELP)
                },
            )

    live.fragment(table)
    with data.section(url, "the schedules"):
        names = [s["name"] for s in data.schedules(url)]
        if not names:
            return
        columns = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
        name = columns[0].selectbox("Schedule", names, key="operate_schedule")
        with columns[1]:
            actions.button(
                "Pause schedule",
                actions.schedule("pause", name),
                key="operate_schedule_pause",
                area="schedules",
                icon=":material/pause:",
                confirm=f"Pause schedule `{name}`? It creates no job until resumed.",
            )
        with columns[2]:
            actions.button(
                "Resume schedule",
                actions.schedule("resume", name),
                key="operate_schedule_resume",
                area="schedules",
                icon=":material/play_arrow:",
                confirm=f"Resume schedule `{name}`? An interval starts afresh from now.",
            )
        with columns[3]:
            actions.button(
                "Run now",
                actions.schedule("trigger", name),
                key="operate_schedule_trigger",
                area="schedules",
                icon=":material/bolt:",
                confirm=f"Run schedule `{name}`'s job once, now? Its ticks go on as before.",
            )
        actions.show_outcome("schedules")


def show_dead_letters(url: str) -> None:
    st.subheader("Dead letters")
    st.caption(
        "Redrive (run again) or purge every dead letter the filters select, up to 1,000 "
        "per click; each is decided on its own history in the log."
    )
    with data.section(url, "the dead letters"):
        columns = st.columns(4)
        queue = columns[0].selectbox("Queue", [ANY, *data.queue_names(url)], key="operate_dl_queue")
        job_type = columns[1].text_input("Type", placeholder="any", key="operate_dl_type").strip()
        reason = (
            columns[2]
            .text_input("Reason or error contains", placeholder="any", key="operate_dl_reason")
            .strip()
        )
        since_text = columns[3].text_input(
            "Since (UTC)", placeholder="10:00 or 2026-12-04 10:00", key="operate_dl_since"
        )
        try:
            since = parse_since(since_text, utcnow())
        except ValueError as exc:
            st.error(str(exc))
            return
        selection = {
            "queue": None if queue == ANY else queue,
            "type": job_type or None,
            "reason": reason or None,
            "since": since.isoformat() if since else None,
        }
        selection = {k: v for k, v in selection.items() if v is not None}
        page = data.dead_letters(
            url,
            queue=selection.get("queue"),
            type=selection.get("type"),
            reason=selection.get("reason"),
            since=since,
            limit=PREVIEW,
        )
        letters = page["items"]
        count = f"{len(letters)}{'+' if page['next_cursor'] else ''}"
        described = ", ".join(f"{k} {v}" for k, v in selection.items()) or "no filter"
        left, right, _ = st.columns([1, 1, 2])
        with left:
            actions.button(
                f"Redrive {count}",
                actions.dead_letters("redrive", selection),
                key="operate_dl_redrive",
                area="dead_letters",
                icon=":material/replay:",
                disabled=not letters,
                confirm=f"Redrive every dead letter selected ({described}: {count})? "
                "Each runs again at once.",
            )
        with right:
            actions.button(
                f"Purge {count}",
                actions.dead_letters("purge", selection),
                key="operate_dl_purge",
                area="dead_letters",
                icon=":material/delete:",
                disabled=not letters,
                confirm=f"Purge every dead letter selected ({described}: {count})? They "
                "stay failed for good.",
            )
        actions.show_outcome("dead_letters")
        if letters:
            links.job_table(
                pd.DataFrame(
                    [
                        {
                            "job": d["job_id"],
                            "queue": d["queue"],
                            "type": d["type"],
                            "reason": d["reason"],
                            "dead-lettered": parse_time(d["dead_lettered_at"]),
                        }
                        for d in letters
                    ]
                ),
                letters,
                key="operate_dl_list",
                column_config={"dead-lettered": st.column_config.DatetimeColumn(format="distance")},
            )
        else:
            st.success("No dead letter matches.")


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
