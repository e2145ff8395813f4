"""``python -m streamlit_app [STREAMLIT OPTIONS]``: the dashboard, wherever it is installed.

Runs ``streamlit run`` on this package's own ``app.py``, so an image, a manifest or ``fq up``
starts the dashboard without knowing where site-packages is. Every option is passed on to
``streamlit run`` as given, e.g.::

    python -m streamlit_app --server.port 8501 --server.address 0.0.0.0

A service has no browser to open and should not report usage statistics, so ``--server.headless
true`` and ``--browser.gatherUsageStats false`` are the defaults here; options given later on the
command line win, as they do for ``streamlit run``.
"""

from __future__ import annotations

import sys
from importlib.resources import as_file, files

from streamlit.web import cli

DEFAULTS = ["--server.headless", "true", "--browser.gatherUsageStats", "false"]


def argv(app: str, options: list[str]) -> list[str]:
    """The ``streamlit`` command line that runs the dashboard ``app`` with ``options``."""
    return ["run", app, *DEFAULTS, *options]


def main() -> None:
    # The installed package's own app.py (a plain file in any pip install; the pages beside
    # it are found relative to it).
    with as_file(files("streamlit_app") / "app.py") as app:
        # The click group is the `streamlit` command itself; it exits the process with the
        # server's own status.
        cli.main(argv(str(app), sys.argv[1:]), prog_name="streamlit")


if __name__ == "__main__":
    main()
