"""Who may see the dashboard: nothing that reads the gateway runs before an operator logs in.

Two ways in, chosen by configuration:

* **OIDC** (``st.login``), when Streamlit's ``secrets.toml`` has an ``[auth]`` block (needs
  the ``oidc`` extra, ``streamlit[auth]``). The identity provider decides who may sign in;
  Streamlit keeps the sign-in in a signed cookie, so it survives a reload.
* **An API key** otherwise (the local default): the operator pastes a key, e.g. the admin
  key ``fq up`` wrote to ``var/admin.key``. The gateway checks it (the dashboard has no key
  store): a key that may read jobs (``jobs:read``) logs in; an unknown, revoked or malformed
  one is refused. The key stays in this browser session's server-side state only; a reload
  asks again.

With ``FQ_AUTH=off`` (tests and trusted local runs, where the gateway checks nothing either)
there is no login.

What the pages show is read with the dashboard's **own** key (``FQ_DASHBOARD_API_KEY`` or
``var/dashboard.key``: ``jobs:read`` and ``ops:read`` only), never with the operator's. The
operator's credentials are for operator actions only: :func:`operator` is the one place a
page asks for them (the Submit page and :mod:`streamlit_app.actions`). An OIDC sign-in
carries no API key, so such actions are not available to it until an identity is mapped to
a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from ferrisqueue.domain.apikeys import key_id_of
from ferrisqueue.settings import AuthMode, Settings
from streamlit_app.client import GatewayClient, GatewayError, GatewayRefused

SESSION_KEY = "fq_operator"
"""Where a key login is kept in ``st.session_state`` (server side, this browser session)."""


@dataclass(frozen=True)
class Operator:
    """Who is logged in: how to name them, and their own API key when they logged in with
    one (None for OIDC, or with auth off)."""

    name: str
    method: str  # "key", "oidc" or "off"
    api_key: str | None = None


def operator() -> Operator | None:
    """The logged-in operator, or None. Operator actions take their key from here
    (:mod:`streamlit_app.actions`): ``operator().api_key``, never the dashboard's own key."""
    if Settings().auth is AuthMode.OFF:
        return Operator(name="anonymous (FQ_AUTH=off)", method="off")
    if oidc_providers() is not None:
        if not st.user.is_logged_in:
            return None
        who = st.user.get("email") or st.user.get("name") or st.user.get("sub") or "?"
        return Operator(name=str(who), method="oidc")
    found: Operator | None = st.session_state.get(SESSION_KEY)
    return found


def oidc_providers() -> list[str | None] | None:
    """The providers of secrets.toml's ``[auth]`` block (``[None]``: the default one, for
    ``st.login()``; a name per ``[auth.NAME]`` section), or None when there is no block."""
    try:
        block: Any = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets.toml at all (Streamlit's error is one)
        return None
    if not block:
        return None
    named = sorted(name for name, value in block.items() if hasattr(value, "items"))
    return [None] if "client_id" in block or not named else list(named)


def require_login(url: str) -> Operator | None:
    """The logged-in operator; else the login form is shown and None returned (the caller
    renders nothing else)."""
    who = operator()
    if who is not None:
        return who
    st.title("FerrisQueue")
    providers = oidc_providers()
    if providers is not None:
        st.info("Sign in to see the dashboard.")
        for provider in providers:
            label = "Log in" if provider is None else f"Log in with {provider}"
            if st.button(label, key=f"login_oidc_{provider or 'default'}", type="primary"):
                st.login() if provider is None else st.login(provider)
        return None
    with st.form("login"):
        st.write("Log in with an API key that may read jobs, e.g. the admin key `fq up` wrote:")
        st.code("cat var/admin.key", language="sh")
        key = st.text_input("API key", type="password", key="login_key")
        sent = st.form_submit_button("Log in", type="primary", key="login_send")
    if sent:
        refused = check_key(url, key.strip())
        if refused is None:
            key = key.strip()
            st.session_state[SESSION_KEY] = Operator(
                name=f"key {key_id_of(key)}", method="key", api_key=key
            )
            st.rerun()
        st.error(refused)
    return None


def check_key(url: str, key: str) -> str | None:
    """None when the gateway accepts ``key`` for reading jobs; else why it may not log in."""
    if key_id_of(key) is None:
        return "That is not an API key (they read fq_<id>_<secret>)."
    try:
        with GatewayClient(url, timeout=5.0, api_key=key) as client:
            client.queues()
    except GatewayRefused as exc:
        if exc.status_code == 401:
            return "The gateway refused this key: it is unknown or revoked."
        if exc.status_code == 403:
            return "This key may not read jobs (it lacks the scope jobs:read)."
        return f"The gateway could not check the key: {exc}"
    except GatewayError as exc:
        return f"The gateway could not check the key: {exc}"
    return None


def logout_button(who: Operator) -> None:
    """In the sidebar: who is logged in, and a button to log out."""
    if who.method == "off":
        st.caption("No login: FQ_AUTH=off.")
        return
    st.caption(f"Logged in: {who.name}")
    if st.button("Log out", icon=":material/logout:", key="logout"):
        if who.method == "oidc":
            st.logout()
        st.session_state.pop(SESSION_KEY, None)
        st.rerun()
