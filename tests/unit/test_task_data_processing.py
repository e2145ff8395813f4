"""The ``data_processing`` task, called through the registry (contract validation included)
on CSV and JSON-lines files under a temporary storage root."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ferrisqueue.errors import Permanent
from ferrisqueue.jobtypes.data_processing import JOB_TYPE
from ferrisqueue.settings import Settings
from worker.context import JobContext
from worker.registry import InvalidPayload, TaskRegistry
from worker.storage import OutsideStorageRoot
from worker.tasks.data_processing import register, to_number

RunJob = Callable[..., Awaitable[dict[str, Any]]]

SALES = """\
region,product,amount,qty,note
north,apple,10.5,3,
north,pear,4,1,fresh
south,apple,7,2,
south,apple,x,,broken
east,plum,2.25,10,fresh fruit
north,apple,1,1,
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir()
    return storage


@pytest.fixture
def progress() -> list[tuple[float, str | None]]:
    """The progress reports of the last run."""
    return []


@pytest.fixture
def run(tmp_path: Path, root: Path, progress: list[tuple[float, str | None]]) -> RunJob:
    """``await run(payload, job_id=...)``: the handler as a worker runs it (in a thread)."""

    async def run_job(payload: dict[str, Any], *, job_id: str = "job-1") -> dict[str, Any]:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            var_dir=tmp_path / "var",
            storage_root=root,
        )
        registry = TaskRegistry({"data_processing": JOB_TYPE})
        register(registry, settings)

        async def report(fraction: float, message: str | None) -> None:
            progress.append((fraction, message))

        ctx = JobContext(
            job_id,
            "default",
            "data_processing",
            1,
            "test-worker",
            report,
            asyncio.get_running_loop(),
        )
        result: dict[str, Any] = await registry.runner("data_processing")(ctx, payload)
        return result

    return run_job


def write(root: Path, name: str, text: str) -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return name


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


# --- Numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("12", 12),
        (" -3 ", -3),
        ("+7", 7),
        ("-4.5", -4.5),
        (".5", 0.5),
        ("1.5E-2", 0.015),
        (42, 42),
        (2.5, 2.5),
        ("", None),
        ("abc", None),
        ("1_000", None),
        ("inf", None),
        ("nan", None),
        ("1e999", None),  # overflows to infinity
        ("\u0661\u0662", None),  # Arabic-Indic digits: not ASCII
        ("1" * 5_000, None),  # longer than int() converts
        (True, None),
        (None, None),
        ([1], None),
    ],
)
def test_what_counts_as_a_number(value: Any, number: float | None) -> None:
    converted = to_number(value)

    assert converted == number
    assert type(converted) is type(number)  # whole numbers stay integers


# --- Filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "matched"),
    [
        ({"column": "region", "op": "eq", "value": "north"}, 3),
        ({"column": "region", "op": "ne", "value": "north"}, 3),
        ({"column": "amount", "op": "eq", "value": 7}, 1),  # "7" as a number
        ({"column": "amount", "op": "lt", "value": 5}, 3),  # 4, 2.25, 1; "x" never matches
        ({"column": "amount", "op": "le", "value": 4}, 3),
        ({"column": "amount", "op": "gt", "value": 7}, 1),
        ({"column": "amount", "op": "ge", "value": 7}, 2),
        ({"column": "product", "op": "lt", "value": "b"}, 4),  # text order: apples
        ({"column": "note", "op": "contains", "value": "fresh"}, 2),
        ({"column": "product", "op": "in", "value": ["pear", "plum"]}, 2),
        ({"column": "qty", "op": "in", "value": [1, 10]}, 3),
        ({"column": "note", "op": "eq", "value": None}, 3),  # an empty CSV cell is null
        ({"column": "note", "op": "eq", "value": ""}, 3),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
async def test_each_filter_op_keeps_the_matching_rows(
    run: RunJob, root: Path, rule: dict[str, Any], matched: int
) -> None:
    write(root, "sales.csv", SALES)

    result = await run(
        {"input": "sales.csv", "filters": [rule], "aggregations": [{"fn": "count", "as": "n"}]}
    )

    assert result["rows_read"] == 6
    assert result["rows_matched"] == matched
    assert (root / result["output"]).read_text() == f"n\n{matched}\n"


async def test_all_filters_must_hold(run: RunJob, root: Path) -> None:
    write(root, "sales.csv", SALES)

    result = await run(
        {
            "input": "sales.csv",
            "filters": [
                {"column": "region", "op": "eq", "value": "north"},
                {"column": "product", "op": "eq", "value": "apple"},
            ],
            "aggregations": [{"fn": "sum", "column": "amount"}],
        }
    )

    assert result["rows_matched"] == 2
    assert (root / result["output"]).read_text() == "sum_amount\n11.5\n"


# --- Grouping and aggregations -------------------------------------------------------------------


async def test_group_by_with_every_aggregation_writes_one_csv_row_per_group(
    run: RunJob, root: Path
) -> None:
    write(root, "sales.csv", SALES)

    result = await run(
        {
            "input": "sales.csv",
            "output": "out/by_region.csv",
            "filters": [{"column": "amount", "op": "ne", "value": "x"}],
            "group_by": ["region"],
            "aggregations": [
                {"fn": "count"},
                {"fn": "count", "column": "note", "as": "notes"},
                {"fn": "sum", "column": "qty"},
                {"fn": "mean", "column": "amount", "as": "avg"},
                {"fn": "min", "column": "amount"},
                {"fn": "max", "column": "amount"},
            ],
        }
    )

    assert result == {
        "rows_read": 6,
        "rows_matched": 5,
        "groups": 3,
        "output": "out/by_region.csv",
    }
    assert (root / "out/by_region.csv").read_text() == (
        "region,count,notes,sum_qty,avg,min_amount,max_amount\n"
        "north,3,1,5,5.166666666666667,1,10.5\n"
        "south,1,0,2,7.0,7,7\n"
        "east,1,1,10,2.25,2.25,2.25\n"
    )


async def test_group_by_several_columns_without_aggregations_lists_distinct_keys(
    run: RunJob, root: Path
) -> None:
    write(root, "sales.csv", SALES)

    result = await run({"input": "sales.csv", "group_by": ["region", "product"]})

    assert result["groups"] == 4
    assert (root / result["output"]).read_text() == (
        "region,product\nnorth,apple\nnorth,pear\nsouth,apple\neast,plum\n"
    )


async def test_without_group_by_there_is_one_row_even_when_nothing_matches(
    run: RunJob, root: Path
) -> None:
    write(root, "sales.csv", SALES)

    result = await run(
        {
            "input": "sales.csv",
            "filters": [{"column": "region", "op": "eq", "value": "west"}],
            "aggregations": [{"fn": "count"}, {"fn": "sum", "column": "qty"}],
        }
    )

    assert (result["rows_matched"], result["groups"]) == (0, 1)
    assert (root / result["output"]).read_text() == "count,sum_qty\n0,\n"  # SQL: sum is null


async def test_a_non_numeric_value_in_a_numeric_aggregation_names_row_and_column(
    run: RunJob, root: Path
) -> None:
    write(root, "sales.csv", SALES)

    with pytest.raises(Permanent, match=r"row 4 \(line 5\), column 'amount': 'x' is not a number"):
        await run({"input": "sales.csv", "aggregations": [{"fn": "mean", "column": "amount"}]})


# --- JSON lines in, JSON out ----------------------------------------------------------------------


async def test_jsonl_in_json_out_keeps_json_values_and_skips_nulls(run: RunJob, root: Path) -> None:
    write(
        root,
        "events.jsonl",
        jsonl(
            {"user": "ann", "ms": 120, "ok": True},
            {"user": "bob", "ms": "80", "ok": False},
            {"user": "ann", "ms": None, "ok": True},
            {"user": "ann", "ok": False},
        )
        + "\n"  # a blank line is skipped
        + jsonl({"user": "bob", "ms": 40.5, "ok": True}),
    )

    result = await run(
        {
            "input": "events.jsonl",
            "output": "out/summary.json",
            "filters": [{"column": "ok", "op": "eq", "value": True}],
            "group_by": ["user"],
            "aggregations": [
                {"fn": "count"},
                {"fn": "count", "column": "ms", "as": "timed"},
                {"fn": "sum", "column": "ms"},
                {"fn": "max", "column": "ms"},
            ],
        }
    )

    assert result == {"rows_read": 5, "rows_matched": 3, "groups": 2, "output": "out/summary.json"}
    assert json.loads((root / "out/summary.json").read_text()) == [
        {"user": "ann", "count": 2, "timed": 1, "sum_ms": 120, "max_ms": 120},
        {"user": "bob", "count": 1, "timed": 1, "sum_ms": 40.5, "max_ms": 40.5},
    ]


async def test_jsonl_in_csv_out_and_csv_in_json_out(run: RunJob, root: Path) -> None:
    write(root, "a.ndjson", jsonl({"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": "x", "v": 3}))
    write(root, "b.csv", "k,v\nx,1\ny,2\nx,3\n")
    aggregate = {"group_by": ["k"], "aggregations": [{"fn": "sum", "column": "v", "as": "v"}]}

    to_csv = await run({"input": "a.ndjson", "output": "a.csv", **aggregate})
    to_json = await run({"input": "b.csv", "output_format": "json", **aggregate}, job_id="j2")

    assert (root / to_csv["output"]).read_text() == "k,v\nx,4\ny,2\n"
    assert to_json["output"] == "data/j2.json"
    assert json.loads((root / "data/j2.json").read_text()) == [
        {"k": "x", "v": 4},
        {"k": "y", "v": 2},
    ]


async def test_json_values_of_different_types_are_different_groups(run: RunJob, root: Path) -> None:
    write(root, "t.jsonl", jsonl({"k": "1"}, {"k": 1}, {"k": True}, {"k": 1}, {"k": None}))

    result = await run(
        {
            "input": "t.jsonl",
            "output": "t.json",
            "group_by": ["k"],
            "aggregations": [{"fn": "count"}],
        }
    )

    assert json.loads((root / result["output"]).read_text()) == [
        {"k": "1", "count": 1},
        {"k": 1, "count": 2},
        {"k": True, "count": 1},
        {"k": None, "count": 1},
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"a": 1}\n{"a": \n', "line 2 is not JSON"),
        ('{"a": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
        ('{"b": 1}\n', r"unknown column\(s\) 'a': in no line"),
        ('{"a": 1}\n{"a": "many"}\n', "line 2, column 'a': 'many' is not a number"),
    ],
    ids=["not-json", "not-an-object", "column-in-no-line", "not-a-number"],
)
async def test_bad_jsonl_fails_permanently_saying_where(
    run: RunJob, root: Path, text: str, error: str
) -> None:
    write(root, "bad.jsonl", text)

    with pytest.raises(Permanent, match=error):
        await run({"input": "bad.jsonl", "aggregations": [{"fn": "sum", "column": "a"}]})


# --- Columns, paths, contract --------------------------------------------------------------------


async def test_an_unknown_csv_column_fails_before_any_row_is_read(run: RunJob, root: Path) -> None:
    write(root, "sales.csv", SALES)

    with pytest.raises(
        Permanent, match=r"unknown column\(s\) 'price'; the CSV header has: 'region'"
    ):
        await run(
            {
                "input": "sales.csv",
                "group_by": ["region"],
                "aggregations": [{"fn": "sum", "column": "price"}],
            }
        )


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("input", "../outside.csv"),
        ("input", "/etc/passwd"),
        ("input", "link/outside.csv"),
        ("output", "../escaped.csv"),
        ("output", "link/escaped.csv"),
    ],
)
async def test_paths_outside_the_storage_root_are_refused(
    run: RunJob, root: Path, field: str, path: str
) -> None:
    write(root.parent, "outside.csv", SALES)
    write(root, "sales.csv", SALES)
    (root / "link").symlink_to(root.parent)
    payload = {
        "input": "sales.csv",
        "input_format": "csv",
        "aggregations": [{"fn": "count"}],
        field: path,
    }

    with pytest.raises(OutsideStorageRoot):
        await run(payload)

    assert not (root.parent / "escaped.csv").exists()


async def test_writing_over_the_input_is_refused(run: RunJob, root: Path) -> None:
    write(root, "sales.csv", SALES)

    with pytest.raises(Permanent, match="is the input"):
        await run({"input": "sales.csv", "output": "sales.csv", "aggregations": [{"fn": "count"}]})


async def test_a_missing_input_fails_permanently(run: RunJob) -> None:
    with pytest.raises(Permanent, match="does not exist"):
        await run({"input": "nowhere.csv", "aggregations": [{"fn": "count"}]})


@pytest.mark.parametrize(
    "payload",
    [
        {"input": "s.csv"},
        {"input": "s.csv", "aggregations": [{"fn": "sum"}]},
        {"input": "s.csv", "aggregations": [{"fn": "median", "column": "a"}]},
        {"input": "s.csv", "group_by": ["count"], "aggregations": [{"fn": "count"}]},
        {"input": "s.txt", "aggregations": [{"fn": "count"}]},
        {"input": "s.csv", "filters": [{"column": "a", "op": "in", "value": 1}], "group_by": ["a"]},
        {
            "input": "s.csv",
            "filters": [{"column": "a", "op": "lt", "value": None}],
            "group_by": ["a"],
        },
        {"input": "s.csv", "output_format": "xml", "group_by": ["a"]},
    ],
    ids=[
        "nothing-to-compute",
        "sum-without-column",
        "unknown-fn",
        "duplicate-output-column",
        "unknown-input-format",
        "in-without-list",
        "lt-null",
        "unknown-output-format",
    ],
)
async def test_a_payload_outside_the_contract_is_invalid(
    run: RunJob, payload: dict[str, Any]
) -> None:
    with pytest.raises(InvalidPayload):
        await run(payload)


async def test_a_rerun_overwrites_the_output_named_after_the_job(run: RunJob, root: Path) -> None:
    write(root, "sales.csv", SALES)
    payload = {"input": "sales.csv", "group_by": ["product"], "aggregations": [{"fn": "count"}]}

    first = await run(payload, job_id="0190-dp")
    second = await run(payload, job_id="0190-dp")

    assert first == second
    assert first["output"] == "data/0190-dp.csv"
    assert [p.name for p in (root / "data").iterdir()] == ["0190-dp.csv"]  # no temp file left


# --- Progress and streaming ----------------------------------------------------------------------


async def test_progress_is_reported_by_bytes_read_monotonically_every_5_percent_or_more(
    run: RunJob, root: Path, progress: list[tuple[float, str | None]]
) -> None:
    write(root, "many.csv", "k,v\n" + "".join(f"k{i % 7},{i}\n" for i in range(200_000)))

    result = await run(
        {"input": "many.csv", "group_by": ["k"], "aggregations": [{"fn": "sum", "column": "v"}]}
    )

    fractions = [fraction for fraction, _ in progress]
    assert result["groups"] == 7
    assert 10 <= len(fractions) <= 20, fractions
    assert all(0 < f <= 1 for f in fractions)
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(fractions)), fractions
    assert progress[-1][1] is not None and progress[-1][1].endswith("rows read")


def write_big_csv(path: Path) -> None:
    """200,000 rows of ~240 bytes: 48 MB, written in a fraction of a second."""
    padding = "p" * 230
    block = "".join(f"{i},g{i % 10},{i % 97},{padding}\n" for i in range(1_000))
    with open(path, "w", encoding="utf-8") as file:
        file.write("id,group,n,padding\n")
        for _ in range(200):
            file.write(block)


async def test_a_50_mb_csv_is_streamed_in_a_small_fraction_of_its_size(
    run: RunJob, root: Path
) -> None:
    write_big_csv(root / "big.csv")
    size = (root / "big.csv").stat().st_size
    assert size > 48_000_000

    began = time.perf_counter()
    tracemalloc.start()
    try:
        result = await run(
            {
                "input": "big.csv",
                "filters": [{"column": "n", "op": "ge", "value": 10}],
                "group_by": ["group"],
                "aggregations": [{"fn": "count"}, {"fn": "sum", "column": "n"}],
            }
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result["rows_read"], result["rows_matched"], result["groups"]) == (200_000, 178_000, 10)
    assert peak < 5_000_000, f"peak traced memory {peak} bytes for a {size}-byte input"
    assert time.perf_counter() - began < 40
