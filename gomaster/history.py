"""Tenure history: master work writes what it did, and a checker judges it independently.

The work itself appends ``start``/``alive``/``stop`` marks with the machine's shared
``CLOCK_MONOTONIC`` to an append-only file, so the checker never relies on the election's own
announcements: it sees what actually ran, and when.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARKS = ("start", "alive", "stop")


def append_mark(log: Path, event: str, **fields: object) -> None:
    """Append one JSON line atomically (a single ``write`` on an ``O_APPEND`` file)."""
    stamp = {"pid": os.getpid(), "t": time.monotonic(), "wall": time.time()}
    line = json.dumps({"event": event, **fields, **stamp}) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_marks(log: Path) -> list[dict[str, object]]:
    """Every complete line of the log (a line being written is skipped)."""
    if not log.exists():
        return []
    marks = []
    for line in log.read_text().splitlines():
        try:
            marks.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return marks


@dataclass(frozen=True, slots=True)
class Tenure:
    """The witnessed span of one token's work: first and last mark, and who did it."""

    token: int
    node: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Overlap:
    """Work of ``older`` was still witnessed ``seconds`` after ``newer`` began."""

    older: int
    newer: int
    seconds: float


def tenures(marks: Iterable[dict[str, object]]) -> list[Tenure]:
    """Group marks by token, in the order the tenures started."""
    spans: dict[int, Tenure] = {}
    for mark in marks:
        if mark.get("event") not in MARKS or not isinstance(mark.get("token"), int):
            continue
        token = int(str(mark["token"]))
        at = float(str(mark["t"]))
        seen = spans.get(token)
        if seen is None:
            spans[token] = Tenure(token, str(mark.get("node", "")), at, at)
        else:
            spans[token] = Tenure(token, seen.node, min(seen.start, at), max(seen.end, at))
    return sorted(spans.values(), key=lambda tenure: tenure.start)


def overlaps(history: list[Tenure]) -> list[Overlap]:
    """Every pair of tenures whose witnessed work overlapped in time."""
    found = []
    for older, newer in itertools.combinations(history, 2):
        if newer.start < older.end:
            found.append(Overlap(older.token, newer.token, older.end - newer.start))
    return found


def token_regressions(history: list[Tenure]) -> list[tuple[int, int]]:
    """Consecutive tenures (in start order) whose tokens did not strictly increase."""
    return [(a.token, b.token) for a, b in itertools.pairwise(history) if b.token <= a.token]
