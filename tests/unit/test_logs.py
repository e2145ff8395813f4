"""FQ_LOG_FORMAT=json: one JSON object per record, with the fields bound where it was made
(and only there), tracebacks kept, uvicorn's access log split into fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from ferrisqueue.logs import ContextFields, JsonFormatter, bind_log_fields, reset_log_fields


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter("worker[w1]"))
        self.addFilter(ContextFields())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("fq.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def test_a_record_is_one_json_line_with_the_fields_bound_where_it_was_made(lines: Lines) -> None:
    logger = logging.getLogger("fq.test.logs")
    logger.info("before")
    token = bind_log_fields(job_id="j1", queue="default", attempt=2, worker_id="w1", trace_id=None)
    logger.info("during %s", "the attempt")
    reset_log_fields(token)
    logger.info("after")

    before, during, after = lines.objects()
    assert all("\n" not in line for line in lines.lines)
    assert during["message"] == "during the attempt"
    assert (during["job_id"], during["queue"], during["attempt"], during["worker_id"]) == (
        "j1", "default", 2, "w1"
    )  # fmt: skip
    assert "trace_id" not in during  # None is left out
    assert during["service"] == "worker[w1]" and during["level"] == "INFO"
    assert "job_id" not in before and "job_id" not in after


def test_an_exception_is_kept_in_the_line(lines: Lines) -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("fq.test.logs").exception("failed")

    (line,) = lines.objects()
    assert "ValueError: bad" in line["exception"]


def test_uvicorns_access_log_is_split_into_fields() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/jobs", "1.1", 202), None,
    )  # fmt: skip
    line = json.loads(JsonFormatter("gateway").format(record))
    assert line["message"] == '127.0.0.1:5000 - "POST /jobs HTTP/1.1" 202'
    assert (line["method"], line["path"], line["status"]) == ("POST", "/jobs", 202)
