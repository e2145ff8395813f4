"""Logging set-up shared by the services' entry points (never called at import)."""

from __future__ import annotations

import logging


def setup_logging(service: str, level: str) -> None:
    """One line per record, tagged with the service."""
    logging.basicConfig(
        level=level.upper(), format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"
    )
