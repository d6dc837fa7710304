"""Witness marks for the benchmarks: a cheap incremental reader, and a target that marks its start.

Kept free of heavy imports: a worker process spawned for a benchmark imports this module to
unpickle its target, and whatever it imports would count as start-up time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gomaster.runtime.lease import Leadership
from gomaster.testing import append_mark

#: How often a reader looks for new marks; the times come from the marks, not from this.
POLL = 0.005
#: How often ``mark_start`` wakes while it idles.
IDLE = 1.0


class MarkTail:
    """Reads a marks file (``gomaster.testing`` JSON lines) incrementally, so polling stays cheap."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def new(self) -> list[dict[str, object]]:
        """Marks completed since the last call."""
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        marks = []
        for line in lines:
            try:
                marks.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return marks

    def next_start(self, after: float, timeout: float) -> dict[str, object]:
        """The first ``start`` mark stamped after monotonic time ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for mark in self.new():
                if mark.get("event") == "start" and float(str(mark["t"])) > after:
                    return mark
            time.sleep(POLL)
        raise RuntimeError(f"no new master within {timeout} s")


def mark_start(log: str, leadership: Leadership) -> None:
    """A target whose first act is to read the clock, for a ``start`` mark it then writes (the
    writing is the benchmark's, not the runtime's); then it idles until it is stopped."""
    now = time.monotonic()
    append_mark(Path(log), "start", at=now, token=leadership.token)
    while True:
        time.sleep(IDLE)
