"""Witnessed tenures, for the demo and for tests: master work writes what it did, and a checker
judges it independently.

The work itself appends ``start``/``alive``/``stop`` marks with the machine's shared
``CLOCK_MONOTONIC`` to an append-only file, so the checker never relies on the election's own
announcements: it sees what actually ran, and when.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MARKS = ("start", "alive", "stop")


def append_mark(log: Path, event: str, *, at: float | None = None, **fields: object) -> None:
    """Append one JSON line atomically (a single ``write`` on an ``O_APPEND`` file), stamped
    ``at`` (a ``CLOCK_MONOTONIC`` time taken earlier) or now."""
    now = time.monotonic() if at is None else at
    stamp = {"pid": os.getpid(), "ppid": os.getppid(), "t": now, "wall": time.time()}
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


def _work_marks(marks: Iterable[dict[str, object]]) -> list[tuple[int, str, float]]:
    """(token, node, t) of every mark of master work, in log order."""
    found = []
    for mark in marks:
        if mark.get("event") in MARKS and isinstance(mark.get("token"), int):
            found.append((int(str(mark["token"])), str(mark.get("node", "")), float(str(mark["t"]))))
    return found


def tenures(marks: Iterable[dict[str, object]]) -> list[Tenure]:
    """Group marks by token, in the order the tenures started."""
    spans: dict[int, Tenure] = {}
    for token, node, at in _work_marks(marks):
        seen = spans.get(token)
        if seen is None:
            spans[token] = Tenure(token, node, at, at)
        else:
            spans[token] = Tenure(token, seen.node, min(seen.start, at), max(seen.end, at))
    return sorted(spans.values(), key=lambda tenure: tenure.start)


def overlaps(history: list[Tenure]) -> list[Overlap]:
    """Every pair of tenures whose witnessed work overlapped in time."""
    pairs = itertools.combinations(history, 2)
    return [Overlap(a.token, b.token, a.end - b.start) for a, b in pairs if b.start < a.end]


def token_regressions(history: list[Tenure]) -> list[tuple[int, int]]:
    """Consecutive tenures (in start order) whose tokens did not strictly increase."""
    return [(a.token, b.token) for a, b in itertools.pairwise(history) if b.token <= a.token]


# ---- faults: stale marks of a frozen master, and time without a master ---------------------

#: A master frozen past its lease must stop its work within this long of resuming: its first
#: watchdog check (every 20 ms) sees the deadline gone and ends the work.
STALE_LIMIT = 0.2


@dataclass(frozen=True, slots=True)
class Freeze:
    """``node``'s whole process tree was SIGSTOPped at ``stopped`` and SIGCONTed at ``resumed``.

    Times are the shared ``CLOCK_MONOTONIC``, read by whoever sent the signals just before
    sending them, so no mark of ``node`` can carry a time in ``(stopped, resumed)`` unless some
    process of it escaped the freeze.
    """

    node: str
    stopped: float
    resumed: float


@dataclass(frozen=True, slots=True)
class Stale:
    """Marks of ``older`` written after ``newer`` began, by a master resumed from a freeze.

    These are exactly the writes a fencing store rejects (their token is no longer the newest).
    They are expected once a freeze outlasts the lease; what matters is that they stop quickly:
    ``window`` is how long after resuming the last of them was written.
    """

    older: int
    newer: int
    node: str
    resumed: float
    last: float
    marks: int

    @property
    def window(self) -> float:
        """Seconds from SIGCONT to the frozen master's last stale mark."""
        return self.last - self.resumed


@dataclass(frozen=True, slots=True)
class Judgement:
    """What the witness log of one lock shows.

    ``overlaps`` and ``regressions`` must be empty. ``stale`` holds the fenced marks of frozen
    masters, which are not overlaps but must each end within :data:`STALE_LIMIT`. ``witness``
    is the time of every mark of legitimate master work (stale marks left out), sorted, for
    measuring how long the lock went without a master.
    """

    tenures: list[Tenure]
    overlaps: list[Overlap]
    regressions: list[tuple[int, int]]
    stale: list[Stale]
    witness: list[float]


def _newer_starts(history: list[Tenure]) -> dict[int, Tenure]:
    """For each token, the first tenure (by start) among those with a greater token."""
    first: dict[int, Tenure] = {}
    earliest: Tenure | None = None
    for tenure in sorted(history, key=lambda tenure: tenure.token, reverse=True):
        if earliest is not None:
            first[tenure.token] = earliest
        if earliest is None or tenure.start < earliest.start:
            earliest = tenure
    return first


def judge(marks: Iterable[dict[str, object]], freezes: Iterable[Freeze] = ()) -> Judgement:
    """Judge one lock's witness log, given the freezes the harness applied.

    1. Tenures group the marks by token; tokens must rise in start order.
    2. A mark of token ``k`` later than the start of any newer token is *late*.
    3. Late marks of a node that was frozen when the newer token began, all written after it
       resumed, are *stale* (fenced, reported with their window). Any other late mark stays
       in, and shows up as an overlap.
    4. Overlaps are computed on the marks with stale ones left out.
    """
    work = _work_marks(marks)
    history = tenures(marks)
    newer = _newer_starts(history)
    late: dict[int, list[float]] = {}
    for token, _node, at in work:
        successor = newer.get(token)
        if successor is not None and at > successor.start:
            late.setdefault(token, []).append(at)
    excused: dict[int, float] = {}
    stale = []
    by_token = {tenure.token: tenure for tenure in history}
    for token, times in sorted(late.items()):
        successor = newer[token]
        node = by_token[token].node
        resumed = [
            f.resumed
            for f in freezes
            if f.node == node and f.stopped <= successor.start and f.resumed <= min(times)
        ]
        if resumed:
            excused[token] = successor.start
            stale.append(Stale(token, successor.token, node, max(resumed), max(times), len(times)))
    kept = [
        {"event": "alive", "token": token, "node": node, "t": at}
        for token, node, at in work
        if token not in excused or at <= excused[token]
    ]
    return Judgement(
        tenures=history,
        overlaps=overlaps(tenures(kept)),
        regressions=token_regressions(history),
        stale=stale,
        witness=sorted(float(str(mark["t"])) for mark in kept),
    )


def longest_gap(witness: list[float], start: float, end: float) -> float:
    """The longest stretch of ``[start, end]`` without a mark of master work.

    ``witness`` is sorted. With marks every 50 ms, a lock that always had a master shows about
    50 ms; the measure is an upper bound on the time without a master, by one mark interval.
    """
    cursor = start
    longest = 0.0
    for at in witness[bisect.bisect_right(witness, start) :]:
        if at > end:
            break
        longest = max(longest, at - cursor)
        cursor = at
    return max(longest, end - cursor)
