"""Observability the services share: one Prometheus registry per process and the small
HTTP server through which a worker, the projector or the scheduler is scraped.

Which metric lives where, and why, is in ``docs/architecture.md`` ("Metrics"); the metrics
themselves are defined beside what they measure (``worker/metrics.py``,
``projections/observe.py``, ``scheduler/depth.py``, ``gateway/metrics.py``).
"""
