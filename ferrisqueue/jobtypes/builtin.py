"""The built-in job types' contracts, one module per type; this module lists them."""

from __future__ import annotations

from ferrisqueue.jobtypes import JobType, cleanup, data_processing, email, image, report

JOB_TYPES: tuple[JobType, ...] = (
    email.JOB_TYPE,
    image.JOB_TYPE,
    cleanup.JOB_TYPE,
    data_processing.JOB_TYPE,
    report.JOB_TYPE,
)
