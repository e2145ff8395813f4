"""Operator actions: cancel, run again (redrive), purge, pause and resume a queue, pause,
resume and trigger a schedule, and the same on a filtered selection of dead letters.

Each button asks for confirmation (a dialog), then calls the gateway with the **logged-in
operator's own key** (:func:`streamlit_app.login.operator`), never the dashboard's
read-only one, so the gateway checks the operator's scope and the event names them as
actor. What came of it is kept in the session and shown where the page puts
:func:`show_outcome`: the resulting event, or why the gateway refused (a 403 says which
scope the key lacks). Each action is a function of a :class:`GatewayClient` returning a
:class:`Done`, so the same action serves a single job and a bulk selection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from streamlit_app import data, login
from streamlit_app.client import JSON, GatewayClient, GatewayError, GatewayRefused


@dataclass(frozen=True)
class Done:
    """The gateway did it (``ok``), or answered that it did nothing (``ok`` False, e.g. a
    job that is no longer dead-lettered); ``event`` is what the log now holds."""

    summary: str
    event: Any = None
    job_id: str | None = None
    ok: bool = True


@dataclass(frozen=True)
class Refused:
    """The action did not reach the log: ``message`` says why, for an operator."""

    message: str


Act = Callable[[GatewayClient], Done]
DONE = {"redrive": "redriven", "purge": "purged"}
Outcome = Done | Refused


def perform(url: str, act: Act) -> Outcome:
    """Run ``act`` with the operator's key; drop the cached reads so the pages show it."""
    who = login.operator()
    if who is None:
        return Refused("Log in first.")
    if who.method == "oidc":
        return Refused(
            "A sign-in with OIDC carries no API key, so it cannot act on jobs yet. Log in "
            "with an API key (e.g. var/admin.key) to use the actions."
        )
    try:
        with GatewayClient(url, api_key=who.api_key) as client:
            return act(client)
    except GatewayRefused as exc:
        return Refused(refusal(exc))
    except GatewayError as exc:
        return Refused(f"Nothing was done: {exc}")
    finally:
        data.clear()


def refusal(exc: GatewayRefused) -> str:
    """The gateway's refusal, said for an operator (a 403 names the missing scope)."""
    if exc.status_code == 403:
        return (
            f"Not allowed: your API key may not do this. {exc.reason}. Ask an admin for a "
            "key with that scope (`fq keys create`)."
        )
    if exc.status_code == 401:
        return "The gateway no longer accepts your key (revoked?): log out and in again."
    if exc.status_code == 503:
        return f"Nothing was done: the gateway cannot reach NATS ({exc.reason}). Try again."
    return f"Refused by the gateway ({exc.status_code}): {exc.reason}"


def button(
    label: str,
    act: Act,
    *,
    key: str,
    confirm: str,
    area: str,
    icon: str | None = None,
    disabled: bool = False,
    help: str | None = None,
) -> None:
    """A button that asks ``confirm`` in a dialog, then performs ``act``; its outcome is
    shown by :func:`show_outcome` of the same ``area``."""
    if st.button(label, key=key, icon=icon, disabled=disabled, help=help):
        st.dialog(f"{label}?")(_confirm)(label, act, confirm, area)


def _confirm(label: str, act: Act, confirm: str, area: str) -> None:
    st.markdown(confirm)
    yes, no = st.columns(2)
    if yes.button(label, key="fq_action_confirm", type="primary"):
        st.session_state[f"fq_outcome_{area}"] = perform(data.gateway_url(), act)
        st.rerun()
    if no.button("Cancel", key="fq_action_cancel"):
        st.rerun()


def show_outcome(area: str) -> None:
    """The outcome of the newest action of ``area``, until the next one."""
    outcome: Outcome | None = st.session_state.get(f"fq_outcome_{area}")
    if outcome is None:
        return
    if isinstance(outcome, Refused):
        st.error(outcome.message, icon=":material/block:")
        return
    (st.success if outcome.ok else st.warning)(outcome.summary)
    if outcome.job_id:
        st.page_link(
            "views/job.py",
            label=f"Open job {outcome.job_id}",
            icon=":material/open_in_new:",
            query_params={"job": outcome.job_id},
        )
    if outcome.event is not None:
        with st.expander("The resulting event", expanded=True):
            st.json(outcome.event, expanded=True)


# --- the actions ------------------------------------------------------------------------------


def _newest_event(client: GatewayClient, job_id: str) -> JSON:
    """The job's newest event in the log, with who caused it."""
    entry = client.job_events(job_id)[-1]
    return {k: entry[k] for k in ("seq", "event", "actor", "at", "status_after", "body")}


def cancel(job_id: str) -> Act:
    def act(client: GatewayClient) -> Done:
        job = client.cancel(job_id)
        state = job["status"]
        if state == "running":
            state = "cancel requested: its worker stops it"
        return Done(f"Job {job_id}: {state}.", _newest_event(client, job_id))

    return act


def dead_letter(action: str, job_id: str) -> Act:
    """``redrive`` (run again) or ``purge`` one job's dead letter."""

    def act(client: GatewayClient) -> Done:
        answer = client.dead_letter_action(action, job_ids=[job_id])
        [result] = answer["results"]
        if result["outcome"] == "skipped":
            return Done(f"Job {job_id} was not {DONE[action]}: {result['why']}", ok=False)
        return Done(
            f"Job {job_id} {result['outcome']} by {answer['by']}.",
            _newest_event(client, job_id),
        )

    return act


def dead_letters(action: str, selection: JSON) -> Act:
    """``redrive`` or ``purge`` every dead letter ``selection`` (the gateway's filter:
    queue, type, reason, since, until) selects, up to the gateway's batch limit."""

    def act(client: GatewayClient) -> Done:
        answer = client.dead_letter_action(action, filter=selection)
        done, skipped = answer["done"], answer["skipped"]
        summary = f"{done} of {answer['selected']} dead letters {DONE[action]} by {answer['by']}"
        if skipped:
            summary += f"; {skipped} skipped (see below why)"
        if answer["more"]:
            summary += "; more match: run it again for the next batch"
        return Done(f"{summary}.", answer["results"], ok=done > 0 or answer["selected"] == 0)

    return act


def queue(action: str, name: str, reason: str | None = None) -> Act:
    """``pause`` or ``resume`` the queue ``name``."""

    def act(client: GatewayClient) -> Done:
        state = client.queue_control(name, action, reason=reason)
        events = client.queue_events(name)
        return Done(
            f"Queue {name} is {state['state']} (by {state['changed_by'] or '—'}).",
            events[-1] if events else state,
        )

    return act


def schedule(action: str, name: str) -> Act:
    """``pause``, ``resume`` or ``trigger`` (one job now) the schedule ``name``."""

    def act(client: GatewayClient) -> Done:
        answer = client.schedule_action(name, action)
        if action == "trigger":
            job_id = answer["job_id"]
            return Done(
                f"Schedule {name} ran once now, by {answer['by']}: job {job_id}.",
                _newest_event(client, job_id),
                job_id=job_id,
            )
        state = "paused" if answer["paused"] else "active"
        return Done(
            f"Schedule {name} is {state} (by {answer['updated_by']}).",
            {k: answer[k] for k in ("name", "paused", "updated_by", "updated_at", "next_fires")},
        )

    return act
