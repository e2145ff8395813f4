"""Queue statistics for ``report`` jobs, and their renderings as HTML, CSV and PDF.

Pure: :func:`compute_stats` folds job facts (read from the ``jobs`` table by the worker)
into :class:`QueueStats`, and the ``render_*`` functions turn those into text or bytes. No
clock, no database and no filesystem here; ``worker/tasks/report.py`` does the I/O.

What the numbers mean:

- A job belongs to the period when it was *created* in it (``since <= created_at < until``),
  whatever its status now.
- **Wait time** is ``started_at - created_at``: from submission to the start of the job's
  *latest* attempt, so a retried job's wait includes its earlier attempts and back-off. A
  job that never started has none. The clocks of the gateway and the worker differ a little,
  so a tiny negative wait is counted as 0.
- **Run time** is ``finished_at - started_at`` of jobs that ended ``completed`` or ``failed``
  after starting (the latest attempt's run).
- **Percentiles** use the nearest-rank method: the p-th percentile of ``n`` sorted values is
  the value at rank ``ceil(p / 100 * n)`` (1-based). It is always one of the measured values,
  never an interpolation; of an empty set it is undefined (``None``, shown as ``-``).
- **Failure reasons** group the ``last_error`` of failed jobs by their first line, cut to
  :data:`REASON_LENGTH` characters; the :data:`TOP_REASONS` most frequent are listed.

Memory: the counts are constant-size, but percentiles need every duration of the period,
so a report holds two floats per job.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fpdf import FPDF
from jinja2 import Environment

from ferrisqueue.domain.states import JobStatus

PERCENTILES = (50, 95, 99)
"""The percentiles a report shows."""

TOP_REASONS = 10
"""How many failure reasons a report lists."""

REASON_LENGTH = 200
"""Failure reasons are grouped by their first line, cut to this many characters."""

ALL_TYPES = "*"
"""The ``type`` of the latency row over every type (never a job type: not a token)."""

NO_ERROR = "(no error recorded)"


@dataclass(frozen=True)
class JobFacts:
    """What a report needs of one job (a few columns of its ``jobs`` row)."""

    type: str
    status: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    last_error: str | None = None


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0 < p <= 100) of ascending ``sorted_values``, by nearest rank."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not sorted_values:
        return None
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class Latency:
    """How many durations were measured, and their percentiles (seconds)."""

    count: int
    percentiles: dict[int, float | None]

    @classmethod
    def of(cls, values: Iterable[float]) -> Latency:
        ordered = sorted(values)
        return cls(len(ordered), {p: percentile(ordered, p) for p in PERCENTILES})


@dataclass(frozen=True)
class TypeLatency:
    """Wait and run time of the jobs of one type (or of all: ``type == ALL_TYPES``)."""

    type: str
    wait: Latency
    run: Latency


@dataclass(frozen=True)
class QueueStats:
    """Everything a report shows, computed from the jobs created in ``[since, until)``."""

    since: datetime
    until: datetime
    queues: tuple[str, ...] | None
    total: int
    by_status: dict[str, int]
    """Every status (zeros included), in the order of :class:`JobStatus`."""
    by_type: dict[str, int]
    """Job types in name order."""
    by_type_status: dict[tuple[str, str], int]
    """Every (type, status) pair of the two above, zeros included."""
    failure_reasons: list[tuple[str, int]]
    """The most frequent first, ties by reason; at most :data:`TOP_REASONS`."""
    latency: list[TypeLatency]
    """One row per type in name order, then the row over all types."""

    @property
    def completed(self) -> int:
        return self.by_status.get(JobStatus.COMPLETED.value, 0)

    @property
    def failed(self) -> int:
        return self.by_status.get(JobStatus.FAILED.value, 0)


def failure_reason(last_error: str | None) -> str:
    """The group a failed job's error counts in: its first line, cut short."""
    if not last_error or not last_error.strip():
        return NO_ERROR
    line = last_error.strip().splitlines()[0].strip()
    return line if len(line) <= REASON_LENGTH else line[: REASON_LENGTH - 3] + "..."


@dataclass
class _Accumulator:
    statuses: Counter[tuple[str, str]] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    waits: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    runs: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, job: JobFacts) -> None:
        self.statuses[job.type, job.status] += 1
        if job.status == JobStatus.FAILED:
            self.reasons[failure_reason(job.last_error)] += 1
        if job.started_at is None:
            return
        wait = (job.started_at - job.created_at).total_seconds()
        self.waits[job.type].append(max(wait, 0.0))
        ended = job.status in (JobStatus.COMPLETED, JobStatus.FAILED)
        if ended and job.finished_at is not None:
            run = (job.finished_at - job.started_at).total_seconds()
            self.runs[job.type].append(max(run, 0.0))


def compute_stats(
    jobs: Iterable[JobFacts],
    *,
    since: datetime,
    until: datetime,
    queues: Sequence[str] | None = None,
) -> QueueStats:
    """The statistics of ``jobs`` (already filtered to the period and queues by the caller)."""
    acc = _Accumulator()
    for job in jobs:
        acc.add(job)
    types = sorted({t for t, _ in acc.statuses})
    statuses = [s.value for s in JobStatus]
    statuses += sorted({s for _, s in acc.statuses} - set(statuses))  # tolerate the unknown
    by_status = {s: sum(n for (_, st), n in acc.statuses.items() if st == s) for s in statuses}
    by_type = {t: sum(n for (ty, _), n in acc.statuses.items() if ty == t) for t in types}
    reasons = sorted(acc.reasons.items(), key=lambda item: (-item[1], item[0]))
    latency = [TypeLatency(t, Latency.of(acc.waits[t]), Latency.of(acc.runs[t])) for t in types]
    latency.append(
        TypeLatency(
            ALL_TYPES,
            Latency.of(v for values in acc.waits.values() for v in values),
            Latency.of(v for values in acc.runs.values() for v in values),
        )
    )
    return QueueStats(
        since=since,
        until=until,
        queues=tuple(queues) if queues else None,
        total=sum(acc.statuses.values()),
        by_status=by_status,
        by_type=by_type,
        by_type_status={(t, s): acc.statuses[t, s] for t in types for s in statuses},
        failure_reasons=reasons[:TOP_REASONS],
        latency=latency,
    )


# --- Rendering --------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    """A duration as the HTML and PDF reports show it: seconds with milliseconds."""
    return "-" if value is None else f"{value:.3f}"


def _when(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem;
         color: #1f2328; padding: 0 1rem; }
  h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
  .meta { color: #59636e; margin: 0; }
  .totals { display: flex; gap: 1rem; margin-top: 1.5rem; }
  .total { border: 1px solid #d0d7de; border-radius: 6px; padding: .6rem 1.2rem; }
  .total b { display: block; font-size: 1.6rem; }
  table { border-collapse: collapse; margin-top: .5rem; }
  th, td { border: 1px solid #d0d7de; padding: .3rem .7rem; }
  th { background: #f6f8fa; text-align: left; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; }
  tr.all td { font-weight: bold; }
  .reason { max-width: 50rem; overflow-wrap: anywhere; font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">Jobs created from <time>{{ since }}</time> up to <time>{{ until }}</time>
(exclusive); queues: {{ queues }}.</p>
<p class="meta">Generated {{ generated }}. Durations in seconds; percentiles by nearest rank.</p>
<div class="totals">
  <div class="total" id="total-jobs"><b>{{ s.total }}</b>jobs</div>
  <div class="total" id="total-completed"><b>{{ s.completed }}</b>completed</div>
  <div class="total" id="total-failed"><b>{{ s.failed }}</b>failed</div>
</div>

<h2>By status</h2>
<table id="by-status">
<tr><th>status</th><th>jobs</th></tr>
{% for status, n in s.by_status.items() %}<tr><td>{{ status }}</td><td class="n">{{ n }}</td></tr>
{% endfor %}</table>

<h2>By type and status</h2>
{% if s.by_type %}<table id="by-type">
<tr><th>type</th>{% for status in s.by_status %}<th>{{ status }}</th>{% endfor %}<th>total</th></tr>
{% for type, n in s.by_type.items() %}<tr><td>{{ type }}</td>
{%- for status in s.by_status %}<td class="n">{{ s.by_type_status[(type, status)] }}</td>
{%- endfor %}<td class="n">{{ n }}</td></tr>
{% endfor %}</table>{% else %}<p>No jobs in this period.</p>{% endif %}

<h2>Top failure reasons</h2>
{% if s.failure_reasons %}<table id="failure-reasons">
<tr><th>reason</th><th>failed jobs</th></tr>
{% for reason, n in s.failure_reasons %}<tr><td class="reason">{{ reason }}</td>
<td class="n">{{ n }}</td></tr>
{% endfor %}</table>{% else %}<p>No failed jobs.</p>{% endif %}

<h2>Wait and run time (seconds)</h2>
<table id="latency">
<tr><th rowspan="2">type</th><th colspan="{{ 1 + ps|length }}">wait (created to started)</th>
<th colspan="{{ 1 + ps|length }}">run (started to finished)</th></tr>
<tr><th>jobs</th>{% for p in ps %}<th>p{{ p }}</th>{% endfor %}
<th>jobs</th>{% for p in ps %}<th>p{{ p }}</th>{% endfor %}</tr>
{% for row in s.latency %}<tr{% if row.type == all %} class="all"{% endif %}>
<td>{{ "all types" if row.type == all else row.type }}</td>
<td class="n">{{ row.wait.count }}</td>
{%- for p in ps %}<td class="n">{{ fmt(row.wait.percentiles[p]) }}</td>{% endfor %}
<td class="n">{{ row.run.count }}</td>
{%- for p in ps %}<td class="n">{{ fmt(row.run.percentiles[p]) }}</td>{% endfor %}</tr>
{% endfor %}</table>
</body>
</html>
"""

_ENV = Environment(autoescape=True, keep_trailing_newline=True)
# Built once at import: a jinja2 Environment is pure configuration (no I/O, no state).
_TEMPLATE = _ENV.from_string(_HTML)


def render_html(stats: QueueStats, *, generated_at: datetime, title: str = "Queue report") -> str:
    """The report as a standalone HTML page (no scripts, no external resources)."""
    return _TEMPLATE.render(
        title=title,
        s=stats,
        since=_when(stats.since),
        until=_when(stats.until),
        queues=", ".join(stats.queues) if stats.queues else "all",
        generated=_when(generated_at),
        ps=PERCENTILES,
        all=ALL_TYPES,
        fmt=seconds,
    )


CSV_COLUMNS = ("section", "type", "status", "reason", "metric", "value")
"""The header of the CSV report.

One file in long form rather than one file per table: a single header that ``csv.DictReader``
or a spreadsheet filter reads as it is. ``section`` is one of ``period``, ``totals``,
``by_status``, ``by_type``, ``by_type_status``, ``failure_reasons`` and ``latency``; the
columns a section does not use are empty. Latency rows have ``metric`` ``wait_count``,
``wait_p50``, ..., ``run_p99`` and ``type`` :data:`ALL_TYPES` for the row over all types;
durations are seconds written with full float precision (an empty value: no data).
"""


def render_csv(stats: QueueStats) -> str:
    """The report as one CSV table in long form (see :data:`CSV_COLUMNS`)."""
    rows: list[tuple[str, str, str, str, str, object]] = [
        ("period", "", "", "", "since", stats.since.isoformat()),
        ("period", "", "", "", "until", stats.until.isoformat()),
        ("period", "", "", "", "queues", " ".join(stats.queues) if stats.queues else ""),
        ("totals", "", "", "", "jobs", stats.total),
        ("totals", "", "", "", "completed", stats.completed),
        ("totals", "", "", "", "failed", stats.failed),
    ]
    rows += [("by_status", "", st, "", "jobs", n) for st, n in stats.by_status.items()]
    rows += [("by_type", t, "", "", "jobs", n) for t, n in stats.by_type.items()]
    rows += [
        ("by_type_status", t, st, "", "jobs", n) for (t, st), n in stats.by_type_status.items()
    ]
    rows += [("failure_reasons", "", "", r, "jobs", n) for r, n in stats.failure_reasons]
    for row in stats.latency:
        for name, latency in (("wait", row.wait), ("run", row.run)):
            rows.append(("latency", row.type, "", "", f"{name}_count", latency.count))
            for p, value in latency.percentiles.items():
                rows.append(("latency", row.type, "", "", f"{name}_p{p}", _number(value)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)  # repr: reads back as the same float


def latin1(text: str) -> str:
    """``text`` with what the PDF core fonts cannot show (outside Latin-1) replaced by '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(stats: QueueStats, *, generated_at: datetime, title: str = "Queue report") -> bytes:
    """The report as a PDF with the same tables as the HTML page.

    Only the core Helvetica font is used: no font file, no network. Text outside Latin-1
    (a job type or error message in another script) shows as '?'.
    """
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_creation_date(generated_at)
    pdf.set_title(latin1(title))
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(text=latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    queues = ", ".join(stats.queues) if stats.queues else "all"
    for line in (
        f"Jobs created from {_when(stats.since)} up to {_when(stats.until)} (exclusive); "
        f"queues: {queues}.",
        f"Generated {_when(generated_at)}. Durations in seconds; percentiles by nearest rank.",
    ):
        pdf.cell(text=latin1(line), new_x="LMARGIN", new_y="NEXT")

    _pdf_table(
        pdf,
        "Totals",
        ["jobs", "completed", "failed"],
        [[str(stats.total), str(stats.completed), str(stats.failed)]],
        width=90,
        labels=0,
    )
    by_status = [[s, str(n)] for s, n in stats.by_status.items()]
    _pdf_table(pdf, "By status", ["status", "jobs"], by_status, width=90)
    statuses = list(stats.by_status)
    _pdf_table(
        pdf,
        "By type and status",
        ["type", *statuses, "total"],
        [
            [t, *(str(stats.by_type_status[t, s]) for s in statuses), str(n)]
            for t, n in stats.by_type.items()
        ],
        widths=(2, *([1] * (len(statuses) + 1))),
        empty="No jobs in this period.",
    )
    _pdf_table(
        pdf,
        "Top failure reasons",
        ["reason", "failed jobs"],
        [[r, str(n)] for r, n in stats.failure_reasons],
        widths=(8, 1),
        empty="No failed jobs.",
    )
    ps = [f"p{p}" for p in PERCENTILES]
    _pdf_table(
        pdf,
        "Wait (created to started) and run (started to finished) time, seconds",
        ["type", "waited", *(f"wait {p}" for p in ps), "ran", *(f"run {p}" for p in ps)],
        [
            [
                "all types" if row.type == ALL_TYPES else row.type,
                str(row.wait.count),
                *(seconds(v) for v in row.wait.percentiles.values()),
                str(row.run.count),
                *(seconds(v) for v in row.run.percentiles.values()),
            ]
            for row in stats.latency
        ],
        widths=(3, *([1] * (2 + 2 * len(PERCENTILES)))),
    )
    return bytes(pdf.output())


def _pdf_table(
    pdf: FPDF,
    heading: str,
    header: list[str],
    rows: list[list[str]],
    *,
    widths: Sequence[int] | None = None,
    width: float | None = None,
    labels: int = 1,
    empty: str | None = None,
) -> None:
    """A heading and a table; the first ``labels`` columns are left-aligned, numbers right."""
    pdf.ln(4)
    pdf.set_font("Helvetica", style="B", size=12)
    pdf.cell(text=latin1(heading), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    if not rows and empty:
        pdf.cell(text=latin1(empty), new_x="LMARGIN", new_y="NEXT")
        return
    with pdf.table(
        col_widths=tuple(widths) if widths else None,
        width=width,
        align="LEFT",
        text_align=tuple("LEFT" if i < labels else "RIGHT" for i in range(len(header))),
        first_row_as_headings=True,
    ) as t:
        for cells in [header, *rows]:
            row = t.row()
            for cell in cells:
                row.cell(latin1(cell))
