"""The ``data_processing`` task: filter, group and aggregate a CSV or JSON-lines file.

The semantics (nulls, numbers, text comparison, output shapes) are the contract's and are
written down in :mod:`ferrisqueue.jobtypes.data_processing`. This module adds how:

* **Streaming.** Rows are read one at a time (``csv.reader`` / one line at a time) and
  dropped once folded into their group's accumulators (count, sum, min, max; a mean is
  sum / count), so memory grows with the number of groups, never with the input. A CSV field
  is capped by the csv module's field size limit and a JSON line by :data:`MAX_LINE_CHARS`,
  so a missing quote or newline cannot pull the whole file into one row.
* **Progress** is bytes read over the file's size, reported at most every
  :data:`PROGRESS_STEP` (about 20 events for any input size).
* **Idempotent.** The output goes to a temporary file beside the target and is moved into
  place with ``os.replace``; the default output path is named after the job id. Writing over
  the input is refused.
* A plain ``def`` handler: the registry runs it in a thread, off the event loop.
"""

from __future__ import annotations

import csv
import io
import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.data_processing import (
    DataProcessingPayload,
    DataProcessingResult,
    Filter,
)
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import TaskRegistry
from worker.storage import atomic_writer, inside

PROGRESS_STEP = 0.05
MAX_LINE_CHARS = 1 << 20
"""Longest JSON line accepted (1 Mi characters)."""
CHECK_EVERY = 4096
"""Rows between looks at the read position (cheap, but not free per row)."""
MAX_GROUPS = 1_000_000
"""Memory is O(groups); this bounds it (a few hundred bytes a group) against a group-by on a
column whose values are all different."""

Report = Callable[[float, str | None], None]
Getter = Callable[[Any], Any]
Predicate = Callable[[Any], bool]

_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_isfinite = math.isfinite


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Register the handler of ``data_processing`` jobs."""

    def data_processing(ctx: JobContext, payload: DataProcessingPayload) -> DataProcessingResult:
        """Stream the input through filters and aggregations (in a thread)."""
        return process_data(
            payload,
            root=settings.effective_storage_root,
            job_id=ctx.job_id,
            report=ctx.progress_from_thread,
        )

    registry.task("data_processing")(data_processing)


# --- Values -----------------------------------------------------------------------------------


def to_number(value: Any) -> int | float | None:
    """``value`` as a number if it is numeric (see the contract), else None."""
    kind = type(value)
    if kind is str:
        try:
            if value.isdecimal() and value.isascii():  # the hot path: no regex, no raise
                return int(value)
            text = value.strip()
            if _INTEGER.fullmatch(text):
                return int(text)
        except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
            return None
        if _DECIMAL.fullmatch(text) is None:
            return None
        number = float(text)
        return number if _isfinite(number) else None
    if kind is int:
        return int(value)
    if kind is float:
        return float(value) if _isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return to_number(int(value) if isinstance(value, int) else float(value))  # subclasses


def to_text(value: Any) -> str:
    """``value`` as text: strings as they are, JSON spelling for the rest, "" for null."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _predicate(rule: Filter) -> Predicate:
    """A test of one cell value for ``rule``."""
    value = rule.value
    if rule.op in ("eq", "ne", "in"):
        wanted = value if isinstance(value, list) else [value]
        want_null = None in wanted
        texts = {to_text(v) for v in wanted if isinstance(v, str | bool)}
        numbers = {v for v in wanted if isinstance(v, int | float) and not isinstance(v, bool)}

        def equal(cell: Any) -> bool:
            if cell is None and want_null:
                return True
            if texts and to_text(cell) in texts:
                return True
            return bool(numbers) and to_number(cell) in numbers

        if rule.op == "ne":
            return lambda cell: not equal(cell)
        return equal
    if rule.op == "contains":
        needle = str(value)
        return lambda cell: needle in to_text(cell)
    compare: Callable[[Any, Any], bool] = getattr(operator, rule.op)
    if isinstance(value, str):
        return lambda cell: cell is not None and compare(to_text(cell), value)

    def numeric(cell: Any) -> bool:
        number = to_number(cell)
        return number is not None and compare(number, value)

    return numeric


# --- Accumulators -------------------------------------------------------------------------------


class NotNumeric(Exception):
    """A value in a numeric aggregation is not a number (the caller adds where)."""


def numeric(value: Any) -> int | float | None:
    """A present value of a numeric aggregation as a number (None: the value is missing);
    :class:`NotNumeric` if it is present but not a number."""
    if value is None:
        return None
    number = to_number(value)
    if number is None:
        raise NotNumeric(value)
    return number


Accumulator = list[Any]
"""One aggregation's state for one group, O(1) whatever the group's size:
``[count, total, minimum, maximum]`` (a mean is total / count)."""
Update = Callable[[Accumulator, Any], None]
"""Folds one row into an accumulator; raises :class:`NotNumeric`."""


SLOTS = {"count": 0, "sum": 1, "min": 2, "max": 3}


def new_accumulator() -> Accumulator:
    return [0, 0, None, None]


def _updater(get: Getter | None, fn: str) -> Update:
    """The fold of one row into an accumulator of ``fn`` over the column ``get`` reads.

    One small function per kind rather than one general one: this runs for every row and
    aggregation, so it does no more than its kind needs."""
    if get is None:

        def count_rows(acc: Accumulator, row: Any) -> None:
            acc[0] += 1

        return count_rows
    if fn == "count":

        def count_values(acc: Accumulator, row: Any) -> None:
            if get(row) is not None:
                acc[0] += 1

        return count_values

    if fn in ("sum", "mean"):

        def add(acc: Accumulator, row: Any) -> None:
            number = numeric(get(row))
            if number is not None:
                acc[0] += 1
                acc[1] += number

        return add
    slot, better = (SLOTS["min"], operator.lt) if fn == "min" else (SLOTS["max"], operator.gt)

    def extreme(acc: Accumulator, row: Any) -> None:
        number = numeric(get(row))
        if number is not None:
            acc[0] += 1
            if acc[slot] is None or better(number, acc[slot]):
                acc[slot] = number

    return extreme


def result(fn: str, acc: Accumulator) -> int | float | None:
    """An aggregation's value for a group; null (as SQL) when no value was aggregated."""
    count, total = acc[0], acc[1]
    if fn == "count":
        return int(count)
    if count == 0:
        return None
    try:
        value: int | float = total / count if fn == "mean" else acc[SLOTS[fn]]
    except OverflowError:  # an integer sum too large for a float mean
        value = math.inf
    if isinstance(value, float) and not _isfinite(value):  # JSON cannot hold infinity
        raise Permanent(f"{fn} overflowed: the values are too large to add up")
    return value


# --- Reading ----------------------------------------------------------------------------------


@dataclass
class Source:
    """Rows of one input, how to read a column of a row, and where the reader is."""

    rows: Iterator[Any]
    getters: dict[str, Getter]
    where: Callable[[int], str]
    """Describes the current row for an error message, given the count of rows read."""
    unseen: set[str] = field(default_factory=set)
    """Columns that must show up in some row (JSON lines have no header to check first)."""


def _csv_source(text: IO[str], columns: list[str]) -> Source:
    """A CSV file: a header, then rows as lists of strings."""
    reader = csv.reader(text)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise Permanent(f"the CSV header cannot be read: {exc}") from exc
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        index.setdefault(name, position)
    unknown = [column for column in columns if column not in index]
    if unknown:
        raise Permanent(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the CSV header has: "
            f"{', '.join(map(repr, header)) or 'nothing (no header row)'}"
        )

    def getter(position: int) -> Getter:
        def get(row: list[str]) -> str | None:
            # An empty cell, or one missing from a short row, is null.
            try:
                return row[position] or None
            except IndexError:
                return None

        return get

    def rows() -> Iterator[Any]:
        try:
            yield from reader
        except csv.Error as exc:
            raise Permanent(f"CSV line {reader.line_num}: {exc}") from exc

    return Source(
        rows(),
        {column: getter(index[column]) for column in columns},
        lambda count: f"row {count} (line {reader.line_num})",
    )


def _jsonl_source(text: IO[str], columns: list[str]) -> Source:
    """A JSON-lines file: one object per line, blank lines skipped."""
    line_number = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal line_number
        while line := text.readline(MAX_LINE_CHARS + 1):
            line_number += 1
            if len(line) > MAX_LINE_CHARS:
                raise Permanent(f"line {line_number} is longer than {MAX_LINE_CHARS} characters")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Permanent(f"line {line_number} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise Permanent(f"line {line_number} is not a JSON object")
            yield row

    def getter(column: str) -> Getter:
        return lambda row: row.get(column)

    return Source(
        rows(),
        {column: getter(column) for column in columns},
        lambda count: f"line {line_number}",
        unseen=set(columns),
    )


def _group_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A hashable key that keeps JSON's distinctions ("1" vs 1 vs true; objects by value)."""
    return tuple(
        v if v is None or isinstance(v, str) else (type(v).__name__, to_text(v)) for v in values
    )


# --- The job ------------------------------------------------------------------------------------


def process_data(
    payload: DataProcessingPayload, *, root: Path, job_id: str, report: Report
) -> DataProcessingResult:
    """The whole job, synchronously: stream, fold into groups, write atomically."""
    source = inside(root, payload.input)
    output_format = payload.chosen_output_format()
    relative = PurePosixPath(payload.output or f"data/{job_id}.{output_format}").as_posix()
    target = inside(root, relative)
    if target == source:
        raise Permanent(f"output {relative!r} is the input: a re-run would read its own output")
    try:
        size = source.stat().st_size
        binary = open(source, "rb")  # noqa: SIM115 - closed below, with the text wrapper
    except FileNotFoundError as exc:
        raise Permanent(f"input {payload.input!r} does not exist") from exc
    except IsADirectoryError as exc:
        raise Permanent(f"input {payload.input!r} is a directory") from exc
    with binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as text:
        try:
            counts, groups = _fold(payload, text, lambda: binary.tell() / max(size, 1), report)
        except UnicodeDecodeError as exc:
            raise Permanent(f"input {payload.input!r} is not UTF-8 text: {exc}") from exc

    names = [*payload.group_by, *(a.name for a in payload.aggregations)]
    fns = [a.fn for a in payload.aggregations]
    table = [
        dict(zip(names, [*values, *map(result, fns, accumulators)], strict=True))
        for values, accumulators in groups.values()
    ]
    with atomic_writer(target, text=True) as file:
        _write_table(file, output_format, names, table)
    rows_read, rows_matched = counts
    return DataProcessingResult(
        rows_read=rows_read, rows_matched=rows_matched, groups=len(table), output=relative
    )


Groups = dict[tuple[Any, ...], tuple[tuple[Any, ...], list[Accumulator]]]
"""Group key -> (the group-by values as read, one accumulator per aggregation)."""


def _fold(
    payload: DataProcessingPayload, text: IO[str], fraction: Callable[[], float], report: Report
) -> tuple[tuple[int, int], Groups]:
    """Read every row, keeping per-group accumulators only; ((read, matched), groups)."""
    columns = payload.columns()
    is_csv = payload.detected_input_format() == "csv"
    source = _csv_source(text, columns) if is_csv else _jsonl_source(text, columns)
    getters, unseen = source.getters, source.unseen

    tests = [(getters[f.column], _predicate(f)) for f in payload.filters]
    keys = [getters[column] for column in payload.group_by]
    updates = [
        _updater(getters[a.column] if a.column is not None else None, a.fn)
        for a in payload.aggregations
    ]
    groups: Groups = {}
    rows_read = rows_matched = 0
    next_report = PROGRESS_STEP

    # The hot loop: plain for-loops and local names, since it runs once per input row.
    for row in source.rows:
        rows_read += 1
        if unseen:
            unseen.difference_update(row.keys())
        if rows_read % CHECK_EVERY == 0:
            done = min(1.0, fraction())
            if done >= next_report:
                report(done, f"{rows_read} rows read")
                next_report = done + PROGRESS_STEP
        for get, test in tests:
            if not test(get(row)):
                break
        else:
            rows_matched += 1
            values = tuple([get(row) for get in keys])
            key = values if is_csv else _group_key(values)
            group = groups.get(key)
            if group is None:
                if len(groups) >= MAX_GROUPS:
                    raise Permanent(f"more than {MAX_GROUPS} groups: group by fewer columns")
                group = groups[key] = (values, [new_accumulator() for _ in updates])
            try:
                for update, accumulator in zip(updates, group[1]):  # noqa: B905 - same length
                    update(accumulator, row)
            except NotNumeric as exc:
                aggregation = payload.aggregations[updates.index(update)]  # the one that raised
                raise Permanent(
                    f"{source.where(rows_read)}, column {aggregation.column!r}: "
                    f"{exc.args[0]!r} is not a number ({aggregation.fn} needs numbers)"
                ) from None

    if unseen and rows_read:
        raise Permanent(f"unknown column(s) {', '.join(map(repr, sorted(unseen)))}: in no line")
    if not payload.group_by and not groups:  # SQL: an aggregate without GROUP BY gives a row
        groups[()] = ((), [new_accumulator() for _ in updates])
    return (rows_read, rows_matched), groups


# --- Writing ----------------------------------------------------------------------------------


def _write_table(
    file: IO[str], output_format: str, names: list[str], table: list[dict[str, Any]]
) -> None:
    if output_format == "csv":
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([to_text(row[name]) for name in names] for row in table)
        return
    file.write("[\n")
    file.write(",\n".join(json.dumps(row, ensure_ascii=False) for row in table))
    file.write("\n]\n" if table else "]\n")
