"""``fq log restore`` restores the streams that source others last, so FQ_EVENTS finds
FQ_SCHEDULES in place; a folder whose metadata cannot be read keeps its place for
restore_stream to report."""

from __future__ import annotations

import json
from pathlib import Path

from ferrisqueue.cli.backups import _restore_order
from ferrisqueue.log.snapshots import META_FILE


def _backup(root: Path, name: str, config: dict[str, object]) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / META_FILE).write_text(json.dumps({"config": {"name": name, **config}}))
    return folder


def test_streams_that_source_others_are_restored_last(tmp_path: Path) -> None:
    events = _backup(tmp_path, "FQ_EVENTS", {"sources": [{"name": "FQ_SCHEDULES"}]})
    dlq = _backup(tmp_path, "FQ_DLQ", {})
    schedules = _backup(tmp_path, "FQ_SCHEDULES", {"sources": []})
    broken = tmp_path / "BROKEN"
    broken.mkdir()

    order = _restore_order([events, dlq, schedules, broken])

    assert order == [dlq, schedules, broken, events]
