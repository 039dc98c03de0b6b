"""A job's results file (`results.jsonl`, one line per photo handled) read as it grows. Each read parses only the
lines appended since the previous one and keeps their counts per status and where each line starts, so polling a
job of 100,000 photos costs what its new lines cost, and a page of results is read from its own bytes.

Only complete lines count: the job appends each line whole with its newline and fsyncs it, so a line without
its newline is being written, or was cut by a crash (the job drops it when it resumes, and handles that photo
again).
"""

from __future__ import annotations

import json
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATUSES = ("enrolled", "skipped", "refused")


@dataclass
class _Tally:
    read_to: int = 0  # bytes of complete lines read so far
    starts: array[int] = field(default_factory=lambda: array("q"))  # where each line starts
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))


class JobResults:
    """The results files of this process's jobs, each read incrementally."""

    def __init__(self) -> None:
        self._tallies: dict[Path, _Tally] = {}
        self._lock = threading.Lock()

    def _catch_up(self, path: Path) -> _Tally:
        tally = self._tallies.get(path)
        if tally is None or path.stat().st_size < tally.read_to:  # new here, or rewritten: read from the start
            tally = self._tallies[path] = _Tally()
        with path.open("rb") as f:
            f.seek(tally.read_to)
            data = f.read()
        position = tally.read_to
        for raw in data[:data.rfind(b"\n") + 1].splitlines(keepends=True):
            try:
                status = json.loads(raw)["status"]
            except (ValueError, KeyError, TypeError):
                break  # not a whole result: stop here, as a cut line is handled again when the job resumes
            tally.starts.append(position)
            tally.counts[status] = tally.counts.get(status, 0) + 1
            position += len(raw)
        tally.read_to = position
        return tally

    def counts(self, path: Path) -> tuple[int, dict[str, int]]:
        """How many photos are handled, and how many of them per status."""
        with self._lock:
            tally = self._catch_up(path)
            return len(tally.starts), {s: tally.counts.get(s, 0) for s in STATUSES}

    def page(self, path: Path, offset: int, limit: int) -> list[dict[str, Any]]:
        """Results `offset` to `offset + limit`, in the order they were handled."""
        with self._lock:
            tally = self._catch_up(path)
            if offset >= len(tally.starts) or limit <= 0:
                return []
            start = tally.starts[offset]
            stop = tally.starts[offset + limit] if offset + limit < len(tally.starts) else tally.read_to
        with path.open("rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        return [json.loads(line) for line in data.splitlines()]

    def forget(self, path: Path) -> None:
        with self._lock:
            self._tallies.pop(path, None)
