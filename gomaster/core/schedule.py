"""Schedules: the instants a scheduled name runs at (its *ticks*), and which tick is due, as pure
functions of the backend's clock and the name's run ledger.

A tick is an instant on the backend's clock (epoch seconds, in whole milliseconds so that the
ledger stores it exactly), the clock that judges expiry, so every node agrees on it whatever its
own clock says. :class:`Every` ticks at each multiple of its
period since the Unix epoch; :class:`Cron` at the instants of a five-field cron expression in a
named time zone, with DST as Debian's cron handles it (cronsim): a tick whose wall time a
spring-forward skips runs at the first instant after the jump; a tick whose wall time a
fall-back repeats runs once, at its first occurrence; expressions with a wildcard hour run in
both repeated hours.

:func:`due` decides, for a master that has no run going, which tick to run now, if any. It never
chooses more than one: ticks that went by without a run collapse into the latest of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from returns.result import Failure, Result, Success

from gomaster.core.record import MAX_SCHEDULE_LENGTH, Ledger

__all__ = [
    "Busy",
    "Cron",
    "CutShort",
    "Due",
    "Every",
    "Ledger",
    "Missed",
    "Policy",
    "RunTick",
    "Schedule",
    "WaitUntil",
    "cron",
    "describe",
    "described",
    "due",
    "every",
    "latest_tick",
    "next_tick",
    "parse_duration",
]

#: One unit of a duration, in seconds.
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: What a duration looks like, for error messages.
DURATION_FORMS = "a number of seconds or a duration such as 90s, 5m, 1h30m or 1d"


@dataclass(frozen=True, slots=True)
class Every:
    """A tick at every multiple of ``period`` seconds since the Unix epoch: ``Every(300)`` ticks at
    :00, :05, ... of every hour on every node, whenever each node started. The period counts in
    whole milliseconds, as ticks do."""

    period: float

    @property
    def millis(self) -> int:
        """The period in whole milliseconds (at least 1)."""
        return max(1, round(self.period * 1000))


@dataclass(frozen=True, slots=True)
class Cron:
    """A tick at each instant a five-field cron ``expression`` matches in time ``zone``."""

    expression: str
    zone: str = "UTC"


Schedule = Every | Cron

#: Ticks missed while no node was master: run the latest of them once, or skip them.
Missed = Literal["latest", "skip"]
#: A run that a failover cut short: run its tick again on the new master, or count it done.
CutShort = Literal["done", "rerun"]
#: Ticks that came while this node's own run was still going: run the latest once it ends, or skip.
Busy = Literal["wait", "skip"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What to do with the ticks that did not run at their time.

    The defaults keep both promises where they can: ``cut_short="done"`` keeps *at most once*
    (a tick's run starts on one node, ever), ``missed="latest"`` and ``busy="wait"`` keep *at
    least once* for the latest tick (coalescing the ones before it).
    """

    missed: Missed = "latest"
    cut_short: CutShort = "done"
    busy: Busy = "wait"


@dataclass(frozen=True, slots=True)
class RunTick:
    """Start the run of ``tick`` now."""

    tick: float


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to run before ``at`` (backend clock); ``skipped`` is a tick passed over, if any."""

    at: float
    skipped: float | None = None


Due = RunTick | WaitUntil


# -- reading what users write -------------------------------------------------------------


def parse_duration(text: str | float) -> Result[float, str]:
    """Seconds from ``300``, ``"300"``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"1d"`` or ``"250ms"``."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        written = text.strip().lower()
        try:
            seconds = float(written)
        except ValueError:
            parts = _PART.findall(written)
            if not parts or "".join(number + unit for number, unit in parts) != written:
                return Failure(f"invalid duration {text!r}: write {DURATION_FORMS}")
            seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    else:
        return Failure(f"invalid duration {text!r}: write {DURATION_FORMS}")
    if not math.isfinite(seconds) or seconds <= 0:
        return Failure(f"invalid duration {text!r}: it must be positive; write {DURATION_FORMS}")
    return Success(seconds)


def every(period: str | float, *, shortest: float) -> Result[Every, str]:
    """A checked :class:`Every`: its period is a duration no shorter than ``shortest`` (the
    heartbeat: a master looks at its schedule no more often than it renews)."""
    return parse_duration(period).bind(lambda seconds: _long_enough(seconds, shortest, period))


def _long_enough(seconds: float, shortest: float, written: object) -> Result[Every, str]:
    if seconds < shortest:
        return Failure(
            f"the period {written!r} is shorter than the heartbeat ({shortest:g} s): a master could "
            f"not keep up with it; use a period of at least {shortest:g} s or a shorter heartbeat"
        )
    return Success(Every(seconds))


def cron(expression: str, zone: str = "UTC") -> Result[Cron, str]:
    """A checked :class:`Cron`: the expression parses and the zone is known."""
    from cronsim import CronSim, CronSimError

    longest = MAX_SCHEDULE_LENGTH - len("cron ") - len(zone) - 1
    if len(expression) > longest:
        return Failure(f"cron expression is longer than {longest} characters: the run ledger keeps it")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return Failure(f"unknown time zone {zone!r}: use an IANA name such as 'Europe/Paris' or 'UTC'")
    try:
        CronSim(expression, datetime.fromtimestamp(0, tz))  # any instant: parsing is what counts
    except CronSimError as error:
        return Failure(
            f"invalid cron expression {expression!r} ({error}): five fields, minute hour "
            "day-of-month month day-of-week, such as '0 3 * * *'"
        )
    return Success(Cron(expression, zone))


def describe(schedule: Schedule) -> str:
    """The schedule as the run ledger stores it, and :func:`described` reads it back:
    ``every 300000ms`` or ``cron 0 3 * * * Europe/Paris``."""
    match schedule:
        case Every():
            return f"every {schedule.millis}ms"
        case Cron(expression=expression, zone=zone):
            return f"cron {' '.join(expression.split())} {zone}"


def described(text: str) -> Schedule | None:
    """The schedule :func:`describe` wrote, or None for anything else (an older record, a hand
    edit): ``gomaster status`` then shows no next tick."""
    kind, _, rest = text.partition(" ")
    if kind == "every":
        return parse_duration(rest).map(Every).value_or(None)
    if kind == "cron":
        expression, _, zone = rest.rpartition(" ")
        return cron(expression, zone).value_or(None)
    return None


# -- ticks ----------------------------------------------------------------------------------


def latest_tick(schedule: Schedule, at: float) -> float | None:
    """The latest tick at or before ``at``; None when there was none (a cron that never matched)."""
    match schedule:
        case Every():
            step = schedule.millis
            return math.floor(at * 1000) // step * step / 1000
        case Cron():
            return _cron_step(schedule, at, reverse=True)


def next_tick(schedule: Schedule, after: float) -> float | None:
    """The first tick after ``after``; None when there is none within cronsim's horizon."""
    match schedule:
        case Every():
            step = schedule.millis
            return (math.floor(after * 1000) // step + 1) * step / 1000
        case Cron():
            return _cron_step(schedule, after, reverse=False)


def _cron_step(schedule: Cron, at: float, *, reverse: bool) -> float | None:
    """The cron's first match after ``at``, or with ``reverse`` its last match at or before it."""
    from cronsim import CronSim

    # Whole microseconds, rounded down: ``fromtimestamp`` rounds to the nearest, which can move an
    # instant a hair before a tick onto the tick itself.
    start = (_EPOCH + timedelta(microseconds=math.floor(at * 1_000_000))).astimezone(ZoneInfo(schedule.zone))
    if reverse:  # cronsim's reverse is strictly before its start
        start += timedelta(microseconds=1)
    try:
        found = next(CronSim(schedule.expression, start, reverse=reverse))
    except StopIteration:
        return None
    return found.timestamp()


# -- the decision ---------------------------------------------------------------------------


def due(
    schedule: Schedule,
    policy: Policy,
    ledger: Ledger,
    now: float,
    *,
    late_after: float,
    busy_until: float | None = None,
) -> Due:
    """Which tick a master with no run going starts now, if any.

    ``now`` is the backend's clock. ``busy_until`` is when this node's own last run ended in
    the current tenure (None if it ran none): ticks up to then came while it was busy. Any
    other tick older than ``late_after`` when the master first gets to it was missed (no node
    was master at its time; ``late_after`` is longer than a failover).
    """
    later = next_tick(schedule, now)
    waiting = WaitUntil(math.inf if later is None else later)
    tick = latest_tick(schedule, now)
    if tick is None:
        return waiting
    # 1. The latest tick has started already: done, or cut short by a failover.
    if ledger.started is not None and ledger.started >= tick:
        rerun = ledger.unfinished and policy.cut_short == "rerun"
        return RunTick(ledger.started) if rerun else waiting
    # 2. It came while this node's own run went on.
    if busy_until is not None and tick <= busy_until:
        return RunTick(tick) if policy.busy == "wait" else WaitUntil(waiting.at, skipped=tick)
    # 3. It went by while no node was master.
    if now - tick > late_after and policy.missed == "skip":
        return WaitUntil(waiting.at, skipped=tick)
    return RunTick(tick)
