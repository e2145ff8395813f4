"""The dashboard's queries: plain HTTP calls to the gateway (the dashboard owns no data)."""

from __future__ import annotations

from typing import Any

import httpx


class GatewayClient:
    """Reads the gateway's API."""

    def __init__(self, base_url: str, *, timeout: float = 5.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def queues(self) -> list[dict[str, Any]]:
        """Jobs per status in each queue."""
        answer: list[dict[str, Any]] = self._http.get("/queues").raise_for_status().json()
        return answer

    def jobs(
        self, *, status: str | None = None, queue: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The newest jobs, optionally filtered."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if queue:
            params["queue"] = queue
        answer: dict[str, Any] = self._http.get("/jobs", params=params).raise_for_status().json()
        items: list[dict[str, Any]] = answer["items"]
        return items

    def submit(self, type: str, payload: dict[str, Any], queue: str) -> str:
        answer = self._http.post("/jobs", json={"type": type, "payload": payload, "queue": queue})
        job_id: str = answer.raise_for_status().json()["job_id"]
        return job_id
