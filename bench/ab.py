"""``python -m bench.ab REV [--runs 3] -- BENCH OPTIONS``: this checkout against commit REV,
in one sitting, runs alternating (REV first), and the medians of each.

    python -m bench.ab d7ef02e -- --only processing --workers 2 --jobs 20000
    python -m bench.ab d7ef02e --runs 3 -- --only enqueue --jobs 10000

REV is checked out into a temporary git worktree whose ``bench/`` is replaced by this
checkout's, so both sides are measured by the same code and only the services differ (the
bench runs the services of the tree it sits in: ``PYTHONPATH`` is that tree). Both use this
checkout's virtualenv. On a shared machine a run's jobs/s moves with its neighbours; its CPU
per job much less, so compare that first. The worktree is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import REPO


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    p.add_argument("rev", help="the commit to compare with (before)")
    p.add_argument("--runs", type=int, default=3, help="runs of each side")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, options = p.parse_args(argv[:split]), argv[split + 1 :]
    with tempfile.TemporaryDirectory(prefix="fq-ab-") as tmp:
        before = Path(tmp) / "before"
        _git("worktree", "add", "--detach", str(before), args.rev)
        try:
            shutil.rmtree(before / "bench")
            shutil.copytree(
                REPO / "bench",
                before / "bench",
                ignore=shutil.ignore_patterns("results", ".venv-peers", "__pycache__"),
            )
            figures: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
            for run in range(args.runs):
                for side, root in (("before", before), ("after", REPO)):
                    out = Path(tmp) / f"{side}-{run}"
                    subprocess.run(
                        [sys.executable, "-m", "bench", *options, "--out", str(out)],
                        cwd=root,
                        check=True,
                    )
                    (result,) = out.glob("*.json")
                    for name, value in _figures(json.loads(result.read_text())):
                        figures[side].setdefault(name, []).append(value)
        finally:
            _git("worktree", "remove", "--force", str(before))
    print(markdown(args.rev, figures))


def _figures(result: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The figures an A/B compares, by name, from one ``python -m bench`` result."""
    for run in result.get("processing", []):
        where = f"processing {run['workers']}w"
        if run.get("jobs_per_s") is not None:
            yield f"{where} jobs/s", run["jobs_per_s"]
        if lag := run.get("projection", {}).get("lag_s_p99"):
            yield f"{where} lag p99 s", lag
        cpu = run.get("cpu_us_per_job") or {}
        for part, value in cpu.items():
            yield f"{where} CPU µs/job {part}", value
        if cpu:
            yield f"{where} CPU µs/job total", sum(cpu.values())
    for path in result.get("enqueue", []):
        where = f"enqueue {path['path']}"
        yield f"{where} jobs/s", path["jobs_per_s"]
        if path.get("gateway_cpu_us_per_job") is not None:
            yield f"{where} gateway CPU µs/job", path["gateway_cpu_us_per_job"]


def markdown(rev: str, figures: dict[str, dict[str, list[float]]]) -> str:
    rows = [
        f"A/B: {rev} (before) against this checkout (after), runs alternating, medians.",
        "",
        "| figure | before (runs) | after (runs) | before | after | after / before |",
        "|---|---|---|---|---|---|",
    ]
    for name, before in figures["before"].items():
        after = figures["after"].get(name, [])
        b, a = statistics.median(before), statistics.median(after) if after else None
        ratio = f"{a / b:.2f}x" if a is not None and b else "-"
        rows.append(
            f"| {name} | {_list(before)} | {_list(after)} | {_n(b)} | "
            f"{'-' if a is None else _n(a)} | {ratio} |"
        )
    return "\n".join(rows)


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def _list(values: list[float]) -> str:
    return ", ".join(_n(v) for v in values)


def _git(*argv: str) -> None:
    subprocess.run(["git", *argv], cwd=REPO, check=True, capture_output=True)


if __name__ == "__main__":
    main()
