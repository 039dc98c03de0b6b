"""A job's results file read as it grows (service/core/job_results.py): counts and pages agree with reading the
whole file, a line still being written is not counted until its newline arrives, and a page is read from its own
bytes."""

from __future__ import annotations

import json
from pathlib import Path

from service.core.job_results import JobResults


def _line(i: int, status: str) -> str:
    return json.dumps({"index": i, "name": f"p/{i}.jpg", "status": status}) + "\n"


def test_counts_and_pages_follow_the_file_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text("")
    results = JobResults()
    assert results.counts(path) == (0, {"enrolled": 0, "skipped": 0, "refused": 0})
    statuses = ["enrolled", "refused", "skipped", "enrolled", "enrolled"] * 40
    with path.open("a") as out:
        for i, status in enumerate(statuses):
            out.write(_line(i, status))
            out.flush()
            if i % 37 == 0:  # polled while the job runs
                handled, counts = results.counts(path)
                assert handled == i + 1 and sum(counts.values()) == i + 1
    assert results.counts(path) == (200, {"enrolled": 120, "skipped": 40, "refused": 40})
    whole = [json.loads(line) for line in path.read_text().splitlines()]
    assert results.page(path, 0, 1000) == whole
    assert results.page(path, 37, 50) == whole[37:87]
    assert results.page(path, 190, 50) == whole[190:] and results.page(path, 200, 10) == []


def test_a_line_without_its_newline_waits(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text(_line(0, "enrolled") + _line(1, "refused")[:20])  # the second is being written, or was cut
    results = JobResults()
    assert results.counts(path)[0] == 1 and len(results.page(path, 0, 10)) == 1
    path.write_text(_line(0, "enrolled") + _line(1, "refused"))  # its newline arrives
    assert results.counts(path) == (2, {"enrolled": 1, "skipped": 0, "refused": 1})
    path.write_text(_line(5, "skipped"))  # a file rewritten shorter is read again from its start
    assert results.counts(path) == (1, {"enrolled": 0, "skipped": 1, "refused": 0})
    assert results.page(path, 0, 10)[0]["index"] == 5
