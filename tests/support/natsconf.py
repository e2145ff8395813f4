"""``nats-server -t``: does the pinned server accept a config file?

Shared by the tests of every config we ship (nats/server/, the Kubernetes ConfigMaps).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ferrisqueue.log.embedded import server_binary
from ferrisqueue.log.roles import new_password, roles


def role_passwords(queues: tuple[str, ...] = ("default",)) -> dict[str, str]:
    """Made-up passwords for the roles' ``$NATS_PASSWORD_<USER>`` references."""
    return {role.password_env: new_password() for role in roles(queues)}


def check_server_config(config: Path, env: Mapping[str, str] | None = None) -> str:
    """Run ``nats-server -t -c CONFIG`` and return its output; fail the test unless it says
    the config is valid.

    ``env`` is added to the environment: nats-server expands ``$VAR`` references in a
    config from it, as it does in a pod. ``-t`` parses and validates without starting, and
    host names in routes need not resolve for it.
    """
    result = subprocess.run(
        [server_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        env={**os.environ, **(env or {})},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is valid" in output, output
    return output
