"""Contract of the ``data_processing`` job type: stream a CSV or JSON-lines file, keep the rows
that pass every filter, group them, aggregate each group, write one row per group.

The rules, in one place:

* **Input.** ``csv``: UTF-8 (a BOM is allowed) with a header row; every cell is a string and
  an empty cell is *null*. ``jsonl``: one JSON object per line (blank lines skipped); values
  are used as they are and a missing key is *null*. The format comes from ``input_format``,
  else the extension (``.csv``; ``.jsonl`` or ``.ndjson``).
* **Numbers.** A value is numeric when it is a JSON number (not a boolean) or a string that
  reads as a finite decimal number (``42``, ``-3.5``, ``1e6``, surrounding spaces allowed;
  no ``1_000``, ``inf`` or ``nan``). Whole numbers stay integers, so sums of integers are exact.
* **Filters** all have to hold (AND). ``eq``/``ne``/``in`` compare as numbers when the filter
  value is a number (a non-numeric cell is then unequal), otherwise as text: a cell's text is
  the string itself, JSON spelling for other values (``true``, ``1.5``) and ``""`` for null,
  so ``eq ""`` matches empty cells and ``eq null`` matches null ones. ``lt``/``le``/``gt``/
  ``ge`` compare as numbers against a number and as text against a string (ISO dates sort
  right); a null or non-numeric cell never matches. ``contains`` is a case-sensitive
  substring test on the text.
* **Aggregations** follow SQL: ``count`` without a column counts rows, with one it counts
  non-null values; ``sum``/``mean``/``min``/``max`` skip nulls and give null for a group with
  no values. A non-null value that is not numeric in one of them fails the job permanently,
  naming the row and the column: silently skipping it would give a wrong answer that looks
  right. A column that is referenced but exists nowhere (not in the CSV header; in no JSON
  line) fails the job too.
* **Groups** are keyed by the group-by columns' values and written in the order they were
  first seen. Without ``group_by`` there is exactly one group (a row even when nothing
  matched, as SQL's aggregate without GROUP BY). Memory grows with the number of groups
  (never with the input); more than a million groups fail the job.
* **Output.** ``csv``: a header, then one row per group; null is an empty cell. ``json``: one
  JSON array of objects (the output holds one row per group, so it is small; a single array
  is what most tools read directly). The format comes from ``output_format``, else the
  output's extension (``.csv``, ``.json``), else ``csv``.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ferrisqueue.jobtypes import JobType

InputFormat = Literal["csv", "jsonl"]
OutputFormat = Literal["csv", "json"]
FilterOp = Literal["eq", "ne", "lt", "le", "gt", "ge", "contains", "in"]
AggregateFn = Literal["count", "sum", "mean", "min", "max"]
Scalar = str | int | float | bool | None

INPUT_EXTENSIONS: dict[str, InputFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
OUTPUT_EXTENSIONS: dict[str, OutputFormat] = {".csv": "csv", ".json": "json"}

Column = str


class Filter(BaseModel):
    """Keep a row only if ``<row[column]> <op> <value>`` holds."""

    model_config = ConfigDict(extra="forbid")

    column: Column = Field(min_length=1, description="Column (CSV header name or JSON key).")
    op: FilterOp = Field(description="Comparison; see the module rules for numbers and text.")
    value: Scalar | list[Scalar] = Field(
        description="What to compare with: a list for `in`, a string for `contains`, a "
        "number or string for lt/le/gt/ge."
    )

    @model_validator(mode="after")
    def _value_fits_op(self) -> Filter:
        value = self.value
        if self.op == "in":
            if not isinstance(value, list):
                raise ValueError("op 'in' needs a list value")
        elif isinstance(value, list):
            raise ValueError(f"op {self.op!r} needs a single value, not a list")
        elif self.op == "contains" and not isinstance(value, str):
            raise ValueError("op 'contains' needs a string value")
        elif self.op in ("lt", "le", "gt", "ge") and (value is None or isinstance(value, bool)):
            raise ValueError(f"op {self.op!r} needs a number or a string value")
        return self


class Aggregation(BaseModel):
    """One output column per group: ``fn`` over ``column``."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    column: Column | None = Field(
        default=None,
        min_length=1,
        description="Column aggregated; optional for count (then rows are counted).",
    )
    fn: AggregateFn = Field(description="count, sum, mean, min or max.")
    as_: str | None = Field(
        default=None,
        alias="as",
        min_length=1,
        description="Output column name. Default: '<fn>_<column>', or 'count'.",
    )

    @model_validator(mode="after")
    def _column_when_needed(self) -> Aggregation:
        if self.column is None and self.fn != "count":
            raise ValueError(f"{self.fn} needs a column")
        return self

    @property
    def name(self) -> str:
        """The output column this aggregation fills."""
        if self.as_ is not None:
            return self.as_
        return self.fn if self.column is None else f"{self.fn}_{self.column}"


class DataProcessingPayload(BaseModel):
    """Input, filters, grouping, aggregations and output of a data-processing job."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="CSV or JSON-lines file under the storage root.")
    input_format: InputFormat | None = Field(
        default=None, description="Default: from the input extension (.csv, .jsonl, .ndjson)."
    )
    output: str | None = Field(
        default=None,
        min_length=1,
        description="File to write under the storage root. Default: data/<job_id>.<csv|json>, "
        "so a re-run overwrites its own output. Must differ from input.",
    )
    output_format: OutputFormat | None = Field(
        default=None,
        description="csv, or json (one array of objects). Default: from the output "
        "extension, else csv.",
    )
    filters: list[Filter] = Field(
        default_factory=list, max_length=100, description="All must hold (AND)."
    )
    group_by: list[Column] = Field(
        default_factory=list,
        max_length=32,
        description="Columns whose values key the groups. Empty: a single group.",
    )
    aggregations: list[Aggregation] = Field(
        default_factory=list, max_length=100, description="One output column each, per group."
    )

    @model_validator(mode="after")
    def _coherent(self) -> DataProcessingPayload:
        if not self.group_by and not self.aggregations:
            raise ValueError("nothing to compute: give group_by, aggregations or both")
        if self.input_format is None and self.detected_input_format() is None:
            known = ", ".join(INPUT_EXTENSIONS)
            raise ValueError(
                f"cannot tell the format of {self.input!r}: give input_format or use one of {known}"
            )
        names = [*self.group_by, *(aggregation.name for aggregation in self.aggregations)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"output columns appear twice: {', '.join(duplicates)} (use 'as')")
        return self

    def detected_input_format(self) -> InputFormat | None:
        """The input format: explicit, else from the extension (None if neither says)."""
        if self.input_format is not None:
            return self.input_format
        return INPUT_EXTENSIONS.get(PurePosixPath(self.input).suffix.lower())

    def chosen_output_format(self) -> OutputFormat:
        """The output format: explicit, else from the output extension, else csv."""
        if self.output_format is not None:
            return self.output_format
        if self.output is not None:
            return OUTPUT_EXTENSIONS.get(PurePosixPath(self.output).suffix.lower(), "csv")
        return "csv"

    def columns(self) -> list[str]:
        """Every input column the payload refers to, once each, in order."""
        named = [f.column for f in self.filters] + self.group_by
        named += [a.column for a in self.aggregations if a.column is not None]
        return list(dict.fromkeys(named))


class DataProcessingResult(BaseModel):
    """Counts of what was read and written."""

    model_config = ConfigDict(extra="forbid")

    rows_read: int = Field(description="Data rows in the input (CSV header not counted).")
    rows_matched: int = Field(description="Rows that passed every filter.")
    groups: int = Field(description="Rows written: one per group.")
    output: str = Field(description="The written file, relative to the storage root.")


JOB_TYPE = JobType(
    name="data_processing",
    description="Stream a CSV or JSON-lines file under the storage root through filters, "
    "group-by and aggregations (count, sum, mean, min, max) into a CSV or JSON file.",
    payload=DataProcessingPayload,
    result=DataProcessingResult,
)
