"""FerrisQueue dashboard: queue lengths and recent jobs, read from the gateway."""

from __future__ import annotations

import json

import httpx
import streamlit as st

from ferrisqueue.settings import Settings
from streamlit_app.client import GatewayClient

STATUSES = ["pending", "running", "completed", "failed", "canceled"]


def main() -> None:
    st.set_page_config(page_title="FerrisQueue", layout="wide")
    settings = Settings()
    client = GatewayClient(str(settings.gateway_url))
    st.title("FerrisQueue")
    st.caption(f"Gateway {settings.gateway_url} · refresh the page to update")
    try:
        queues = client.queues()
    except httpx.HTTPError as exc:
        st.error(f"The gateway at {settings.gateway_url} is unreachable: {exc}")
        return

    st.subheader("Queues")
    if not queues:
        st.info("No jobs yet. Submit one below or with `fq submit echo`.")
    for queue in queues:
        columns = st.columns(len(STATUSES) + 1)
        columns[0].markdown(f"**{queue['queue']}**")
        for column, status in zip(columns[1:], STATUSES, strict=True):
            column.metric(status, queue["counts"].get(status, 0))

    st.subheader("Recent jobs")
    status = st.selectbox("Status", ["all", *STATUSES])
    jobs = client.jobs(status=None if status == "all" else status)
    st.dataframe(
        [
            {
                k: job[k]
                for k in (
                    "job_id",
                    "queue",
                    "type",
                    "status",
                    "attempts",
                    "created_at",
                    "finished_at",
                    "last_error",
                )
            }
            for job in jobs
        ],
        use_container_width=True,
    )

    with st.form("submit"):
        st.subheader("Submit a job")
        job_type = st.text_input("Type", "echo")
        queue_name = st.text_input("Queue", "default")
        payload = st.text_area("Payload (JSON)", '{"hello": "world"}')
        if st.form_submit_button("Submit"):
            try:
                job_id = client.submit(job_type, json.loads(payload), queue_name)
                st.success(f"Submitted {job_id}")
            except (ValueError, httpx.HTTPError) as exc:
                st.error(f"Not submitted: {exc}")


main()
