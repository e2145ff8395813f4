"""Property-based requests from the gateway's own OpenAPI document (schemathesis) against a
real uvicorn gateway, real nats-server and real SQLite: no answer is a 5xx, every status is
one the document lists, and every body matches the schema the document gives for it.

Bounded: ``FQ_FUZZ_HTTP_EXAMPLES`` examples (default 20) per operation and per generation
mode (valid inputs, and invalid ones that must be refused with a documented 4xx), derandomized
by ``FQ_FUZZ_SEED`` (printed), so a failure reproduces with the same seed.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.hostile.conftest import auth_headers

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(180)]

EXAMPLES = int(os.environ.get("FQ_FUZZ_HTTP_EXAMPLES", "20"))
SEED = int(os.environ.get("FQ_FUZZ_SEED", "16"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def fuzz_gateway(base_url: str, headers: dict[str, str]) -> dict[str, str]:
    """Run every operation of the gateway's OpenAPI document; the failures by operation."""
    document = httpx.get(f"{base_url}/openapi.json", headers=headers, timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=True,
            )
            @hypothesis.seed(SEED)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=15)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Nothing invalid can be made of this operation (no parameters, or only
                # strings in the path): the valid mode covered it.
                continue
            except (FailureGroup, Exception) as exc:  # a check failed, or the request did
                failures[f"{operation.label} ({mode.value})"] = str(exc)
    return failures


async def test_no_request_from_the_openapi_document_gets_a_5xx_or_an_undocumented_answer(
    gateway: httpx.AsyncClient, api_key: str | None
) -> None:
    print(f"schemathesis: {EXAMPLES} examples per operation and mode, seed FQ_FUZZ_SEED={SEED}")
    started = time.monotonic()
    failures = await asyncio.to_thread(
        fuzz_gateway, str(gateway.base_url).rstrip("/"), auth_headers(api_key)
    )
    print(f"schemathesis: done in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(f"== {op}\n{why}" for op, why in failures.items())
    # The gateway survived it all and still answers.
    assert (await gateway.get("/readyz")).status_code == 200
