"""Scraping a service's ``/metrics`` and reading samples out of it with prometheus_client's
own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample, by name and label set, and the families' names."""

    samples: dict[tuple[str, Labels], float]
    families: dict[str, str]
    """Family name -> type (``counter``, ``histogram``, ...)."""

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[tuple[str, Labels], float] = {}
        families: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            families[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(samples, families)

    def value(self, name: str, **labels: str) -> float:
        """The sample ``name`` with exactly ``labels``; 0 when absent (a labelled counter
        has no sample until its first increment)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        """Every sample name (``_total``, ``_bucket``, ``_sum``, ``_count`` included)."""
        return {name for name, _ in self.samples}


async def scrape(url: str) -> Scrape:
    """GET ``url`` (a ``/metrics``) and parse it; fails unless it answers 200 in the text
    format."""
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    return Scrape.parse(answer.text)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How far sample ``name`` with ``labels`` moved between two scrapes."""
    return after.value(name, **labels) - before.value(name, **labels)
