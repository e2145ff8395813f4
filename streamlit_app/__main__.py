"""``python -m streamlit_app [STREAMLIT OPTIONS]``: the dashboard, wherever it is installed.

Runs ``streamlit run`` on this package's own ``app.py``, so an image, a manifest or ``fq up``
starts the dashboard without knowing where site-packages is. Every option is passed on to
``streamlit run`` as given, e.g.::

    python -m streamlit_app --server.port 8501 --server.address 0.0.0.0

A service has no browser to open and should not report usage statistics, and its operators
have nothing to deploy, so headless, no statistics and the viewer toolbar (no Deploy button)
are the defaults here. They are set as Streamlit's own environment variables
(``STREAMLIT_SERVER_HEADLESS``, ``STREAMLIT_BROWSER_GATHER_USAGE_STATS``,
``STREAMLIT_CLIENT_TOOLBAR_MODE``) unless already set,
so a variable of the caller's or an option on the command line still wins, in Streamlit's
usual order (options, then variables, then config files).
"""

from __future__ import annotations

import os
import sys
from importlib.resources import as_file, files

from pydantic import ValidationError
from streamlit.web import cli

from ferrisqueue.domain.apikeys import checked_key
from ferrisqueue.errors import FerrisQueueError
from ferrisqueue.settings import Settings

DEFAULTS = {
    "STREAMLIT_SERVER_HEADLESS": "true",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    # "viewer": no Deploy button nor developer menu; operators have nothing to deploy.
    "STREAMLIT_CLIENT_TOOLBAR_MODE": "viewer",
}


def main() -> None:
    check_settings()
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    # The installed package's own app.py (a plain file in any pip install; the pages beside
    # it are found relative to it).
    with as_file(files("streamlit_app") / "app.py") as app:
        # The click group is the `streamlit` command itself; it exits the process with the
        # server's own status.
        cli.main(["run", str(app), *sys.argv[1:]], prog_name="streamlit")


def check_settings() -> None:
    """Refuse to start on bad settings (a malformed ``FQ_DASHBOARD_API_KEY``, a placeholder)
    rather than serve a dashboard whose every read the gateway refuses."""
    try:
        settings = Settings()
        if settings.dashboard_api_key is not None:
            checked_key(settings.dashboard_api_key.get_secret_value(), what="FQ_DASHBOARD_API_KEY")
    except (ValidationError, FerrisQueueError) as exc:
        sys.exit(f"dashboard: {exc}")


if __name__ == "__main__":
    main()
