"""One Prometheus registry per process, with the process, platform and GC collectors.

A registry of its own rather than prometheus_client's global ``REGISTRY``: nothing is
registered at import time, and two services built in one process (a test) do not collide.
Every FerrisQueue process is one service, so one registry per process is enough (no
multiprocess mode: nothing forks workers).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Seconds, from a millisecond to ten minutes: a job's wait and run time, a request's latency
(Prometheus adds ``+Inf``)."""

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The text exposition format's content type."""


def new_registry() -> CollectorRegistry:
    """A registry holding the process metrics (``process_cpu_seconds_total``,
    ``process_resident_memory_bytes``, ...), ``python_info`` and ``python_gc_*``."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """Every metric of ``registry`` in the text format."""
    return generate_latest(registry)
