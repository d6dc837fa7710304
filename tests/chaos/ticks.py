"""The chaos harness's judge of scheduled names: each lock also runs a job every ``period``
(``gomaster.every``'s target), whose runs are ``run`` marks in a log of their own.

Three counts, from the run marks beside the lock's witness marks (both carry ``wall``, this
machine's clock, which is also every local backend's):

- **duplicates**: ticks whose run started more than once (at most once: must be none);
- **missed**: ticks held from ``tick`` to ``tick + window`` by one tenure whose witness never
  paused longer than ``PAUSE``, with no run of that tick; ``uncoalesced`` are those with no run
  of a later tick in that window either (``missed="latest"`` folds ticks it could not start in
  time into the next one it starts, so those are the ones the promise rules out);
- **demoted writes**: runs that started a tick after a newer tenure had started a later one
  (tokens must not go down in tick order): a demoted master's ledger write that counted.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: The longest pause in a tenure's witness marks (written every 50 ms) that still counts as
#: holding the lease throughout: anything longer may be a freeze.
PAUSE = 0.3


@dataclass(frozen=True, slots=True)
class TickVerdict:
    """What one scheduled lock's runs show."""

    ticks: int
    runs: int
    duplicates: list[float] = field(default_factory=list)
    missed: list[float] = field(default_factory=list)
    uncoalesced: list[float] = field(default_factory=list)
    demoted_writes: list[tuple[float, int]] = field(default_factory=list)


def _walls(witness: Iterable[Mapping[str, object]]) -> dict[int, list[float]]:
    """Each tenure's witness times, sorted."""
    by_token: dict[int, list[float]] = defaultdict(list)
    for mark in witness:
        if mark.get("event") in ("start", "alive"):
            by_token[int(str(mark["token"]))].append(float(str(mark["wall"])))
    return {token: sorted(times) for token, times in by_token.items()}


def _held(times: list[float], start: float, end: float) -> bool:
    """The tenure's marks span ``[start, end]`` with no pause longer than :data:`PAUSE`."""
    if not times or times[0] > start or times[-1] < end:
        return False
    inside = times[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]
    edges = [start, *inside, end]
    return all(later - earlier <= PAUSE for earlier, later in itertools.pairwise(edges))


def judge_ticks(
    runs: Iterable[Mapping[str, object]],
    witness: Iterable[Mapping[str, object]],
    *,
    period: float,
    window: float,
) -> TickVerdict:
    """Judge one scheduled lock; ``window`` is ``ttl + heartbeat``."""
    started = [(float(str(run["tick"])), int(str(run["token"]))) for run in runs if run.get("event") == "run"]
    counts = Counter(tick for tick, _ in started)
    ran = sorted(counts)
    duplicates = sorted(tick for tick, count in counts.items() if count > 1)
    walls = _walls(witness)
    missed: list[float] = []
    uncoalesced: list[float] = []
    if ran:
        last = max(times[-1] for times in walls.values()) if walls else ran[-1]
        tick = ran[0]
        while tick + window <= last:
            if counts[tick] == 0 and any(_held(times, tick, tick + window) for times in walls.values()):
                missed.append(tick)
                later = bisect.bisect_right(ran, tick)
                if later == len(ran) or ran[later] > tick + window:
                    uncoalesced.append(tick)
            tick = round((tick + period) * 1000) / 1000
    # Tokens in tick order: a lower token after a higher one is a write by a demoted master.
    demoted: list[tuple[float, int]] = []
    highest = -math.inf
    for tick, token in sorted(started):
        if token < highest:
            demoted.append((tick, token))
        highest = max(highest, token)
    return TickVerdict(
        ticks=len(ran),
        runs=len(started),
        duplicates=duplicates,
        missed=missed,
        uncoalesced=uncoalesced,
        demoted_writes=demoted,
    )
