"""Submit: a form that POSTs a job to the gateway and shows its answer.

202 shows the new job's id (and a link to its timeline); a 4xx shows the gateway's reason
(422: which field of the payload breaks the type's contract; 413: too large); 503 means NATS
is away and nothing was stored. Types with a contract come from ``GET /job-types``; any other
type may be typed in (the gateway accepts types it has no contract for: a worker's plugin may
run them).
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from streamlit_app import data, login
from streamlit_app.client import GatewayError, GatewayRefused

OTHER = "(another type, entered below)"


def parse_payload(text: str) -> dict[str, Any]:
    """The payload text as a JSON object; ValueError says what is wrong with it."""
    if not text.strip():
        return {}
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the payload is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"the payload must be a JSON object, not {type(payload).__name__}")
    return payload


def render() -> None:
    url = data.gateway_url()
    st.title("Submit a job")
    types: list[dict[str, Any]] = []
    with data.section(url, "the job types"):
        types = data.job_types(url)
    names = [t["name"] for t in types]

    with st.form("submit_job"):
        known = st.selectbox("Type", [OTHER, *names], key="submit_known_type")
        other = st.text_input(
            "Other type",
            value="echo",
            help="Used when Type is the first choice; e.g. echo, sleep, fail.",
            key="submit_other_type",
        )
        queue = st.text_input("Queue", value="default", key="submit_queue")
        payload_text = st.text_area(
            "Payload (JSON object)", value='{"hello": "world"}', height=160, key="submit_payload"
        )
        sent = st.form_submit_button("Submit", type="primary", key="submit_send")
    if sent:
        job_type = other.strip() if known == OTHER else known
        st.session_state["submit_answer"] = submit(url, job_type, queue.strip(), payload_text)
    show_answer(st.session_state.get("submit_answer"))

    if types:
        st.subheader("Job types with a contract")
        for job_type in types:
            with st.expander(f"`{job_type['name']}` — {job_type.get('description') or ''}"):
                st.caption("Payload schema")
                st.json(job_type["payload_schema"], expanded=False)


def submit(url: str, job_type: str, queue: str, payload_text: str) -> dict[str, Any]:
    """POST the job; the outcome as a dict kept in the session (so a rerun still shows it)."""
    if not job_type:
        return {"ok": False, "message": "Not submitted: enter a type."}
    try:
        payload = parse_payload(payload_text)
    except ValueError as exc:
        return {"ok": False, "message": f"Not submitted: {exc}"}
    who = login.operator()
    if who is None or (who.api_key is None and who.method != "off"):
        return {
            "ok": False,
            "message": "Not submitted: submitting is an operator action and needs your own "
            "API key; log in with a key (an OIDC sign-in carries none).",
        }
    try:
        accepted = data.submit(url, job_type, payload, queue or "default", api_key=who.api_key)
    except GatewayRefused as exc:
        return {"ok": False, "message": f"Refused by the gateway ({exc.status_code}): {exc.reason}"}
    except GatewayError as exc:
        return {"ok": False, "message": f"Not submitted: {exc}"}
    return {"ok": True, "job_id": accepted["job_id"], "queue": accepted["queue"]}


def show_answer(answer: dict[str, Any] | None) -> None:
    if answer is None:
        return
    if not answer["ok"]:
        st.error(answer["message"])
        return
    st.success(f"Accepted: job `{answer['job_id']}` in queue `{answer['queue']}`.")
    st.page_link(
        "views/jobs.py",
        label="See its timeline",
        icon=":material/open_in_new:",
        query_params={"job": answer["job_id"]},
    )


if __name__ == "__main__":  # run by st.navigation as a page script
    render()
