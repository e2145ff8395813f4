"""FerrisQueue dashboard: what ``python -m streamlit_app`` (which ``fq up`` runs) hands to
``streamlit run``.

It reads the gateway over HTTP and owns no data. This file only sets the page up, asks for a
login (:mod:`streamlit_app.login`), checks that the gateway answers and hands over to one of
the pages in ``views/``: ``overview`` (queue lengths, throughput, latency, projection lag),
``workers`` (health), ``errors`` (failed jobs, dead letters), ``scheduled`` (delayed jobs,
retries waiting), ``cron`` (schedules, next runs, last outcome), ``queues`` (one queue over
time), ``error_groups`` (failed attempts by error), ``jobs`` (the list), ``job`` (one job:
payload, attempts, timeline, actions), ``operate`` (pause queues and schedules, bulk
dead-letter actions: :mod:`streamlit_app.actions`) and ``submit`` (a form that POSTs a job,
with the operator's own key).
Each page is a file (``st.Page``) so that ``AppTest.switch_page`` can reach it in tests.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from streamlit_app import data, live, login


def pages() -> list[st.Page]:
    """The pages, as files relative to this script (how ``AppTest.switch_page`` finds them)."""
    return [
        st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("views/workers.py", title="Workers", icon=":material/dns:"),
        st.Page("views/errors.py", title="Errors", icon=":material/error:"),
        # Scheduled, Cron, Queues, Error groups: streamlit_app/views/ (their own modules).
        st.Page("views/scheduled.py", title="Scheduled", icon=":material/schedule:"),
        st.Page("views/cron.py", title="Cron", icon=":material/event_repeat:"),
        st.Page("views/queues.py", title="Queues", icon=":material/stacked_line_chart:"),
        st.Page("views/error_groups.py", title="Error groups", icon=":material/bug_report:"),
        st.Page("views/jobs.py", title="Jobs", icon=":material/list:"),
        st.Page("views/job.py", title="Job", icon=":material/description:"),
        st.Page("views/operate.py", title="Operate", icon=":material/tune:"),
        st.Page("views/submit.py", title="Submit", icon=":material/send:"),
    ]


def main() -> None:
    st.set_page_config(page_title="FerrisQueue", page_icon=":material/monitoring:", layout="wide")
    url = data.gateway_url()
    # Before any page: without a login nothing reads the gateway (streamlit_app/login.py).
    who = login.require_login(url)
    if who is None:
        return
    page = st.navigation(pages())
    with st.sidebar:
        login.logout_button(who)
        st.caption(f"Gateway: {url}")
        if st.button("Refresh", icon=":material/refresh:", key="refresh"):
            data.clear()
        live.controls()
        st.caption(
            f"Loaded {datetime.now().strftime('%H:%M:%S')}; "
            f"answers are reused for up to {data.TTL:g} s."
        )
    down = data.reachable(url)
    if down is not None:
        st.title("FerrisQueue")
        st.error(
            f"The gateway at {url} is not reachable, so there is nothing to show. "
            "Start the system with `fq up` (or `make up`), or point the dashboard at a "
            f"running gateway with `FQ_GATEWAY_URL`.\n\nDetails: {down}"
        )
        return
    page.run()


main()
