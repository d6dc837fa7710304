"""Lease timings and the rules that make mutual exclusion hold."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TypeGuard

from returns.result import Failure, Result, Success

#: Drift is a fraction; past one half, "rate" stops meaning anything useful.
MAX_DRIFT_LIMIT = 0.5
#: The shortest lease: below this a lease can expire before the claim that took it has returned,
#: so a node never gets elected and polls without pause.
MIN_TTL = 0.1
#: The longest lease, one day. Every backend call's timeout is at most ``renew_deadline``, which
#: is below ``ttl``; one day is the smallest cap any backend puts on a call's timeout today
#: (Redis, MongoDB), and it keeps every deadline a thread or ``poll`` waits on finite and in range.
MAX_TTL = 86_400.0
#: The shortest ``heartbeat``, ``retry`` and ``grace``: shorter periods only make the loops
#: busy (a follower polling, a leader renewing a hundred times a second) without making
#: anything safer, and no work stops in less than that after SIGTERM.
MIN_PERIOD = 0.01
#: The longest any duration field may be (``retry`` is the only one not already below ``ttl``).
MAX_PERIOD = MAX_TTL
#: The shortest timeout for one backend call that the command line accepts.
MIN_CALL_TIMEOUT = 0.001
#: The longest timeout for one backend call: the same day as :data:`MAX_TTL`.
MAX_CALL_TIMEOUT = MAX_TTL

#: The default lease and drift; ``Timing.from_ttl`` scales the periods below from this lease.
DEFAULT_TTL = 5.0
DEFAULT_MAX_DRIFT = 0.01
#: The default periods, for a lease of ``DEFAULT_TTL``.
DEFAULT_PERIODS: Mapping[str, float] = {"heartbeat": 1.0, "renew_deadline": 3.0, "retry": 1.0, "grace": 1.0}

#: Each duration field and the range it must lie in, inclusive.
DURATION_BOUNDS: Mapping[str, tuple[float, float]] = {
    "ttl": (MIN_TTL, MAX_TTL),
    "heartbeat": (MIN_PERIOD, MAX_PERIOD),
    "renew_deadline": (MIN_PERIOD, MAX_PERIOD),
    "retry": (MIN_PERIOD, MAX_PERIOD),
    "grace": (MIN_PERIOD, MAX_PERIOD),
}


@dataclass(frozen=True, slots=True)
class TimingError:
    """The rule an impossible timing combination breaks, in words a user can act on.

    ``fix`` is the way out for a caller of :class:`Timing` (empty when the rule says it all);
    the command line, which has flags instead, words its own from ``rule``.
    """

    rule: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.rule}. {self.fix}" if self.fix else self.rule


def _finite_number(value: object) -> TypeGuard[int | float]:
    """True for an int or float that is a real number a float can hold (not bool, nan or inf).

    An int too large for a float is refused here rather than left to raise ``OverflowError``
    later, so that :func:`validate_timing` answers with a value for every input.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_seconds(what: str, value: object, least: float, most: float) -> Result[float, TimingError]:
    """Accept a finite number of seconds from ``least`` to ``most`` (both included), or say why not.

    Every ``Timing`` field and every duration given on the command line passes through here, so
    that no clock computation, thread timeout or ``poll`` derived from them can overflow, and no
    loop can spin on a period too short to mean anything.
    """
    if not _finite_number(value):
        return Failure(TimingError(f"{what} must be a finite number of seconds, got {value!r}"))
    seconds = float(value)
    if not least <= seconds <= most:
        return Failure(TimingError(f"{what} must be from {least:g} to {most:g} seconds, got {value!r}"))
    return Success(seconds)


def _broken_rule(
    ttl: float, heartbeat: float, renew_deadline: float, retry: float, grace: float, max_drift: float
) -> str | None:
    """The first rule broken, or None. Order: numbers within bounds, then the safety rules.

    Each safety rule names every value it compared, so a reader sees which one to change.
    """
    values = dict(ttl=ttl, heartbeat=heartbeat, renew_deadline=renew_deadline, retry=retry, grace=grace)
    for field, value in values.items():
        refused = check_seconds(field, value, *DURATION_BOUNDS[field]).swap().value_or(None)
        if refused is not None:
            return refused.rule
    if isinstance(max_drift, bool) or not isinstance(max_drift, int | float):
        return f"max_drift must be a number, got {max_drift!r}"
    if not 0 <= max_drift < MAX_DRIFT_LIMIT:
        return f"max_drift must be in [0, {MAX_DRIFT_LIMIT}), got {max_drift!r}"
    if heartbeat >= renew_deadline:
        return (
            f"heartbeat < renew_deadline is required, but heartbeat is {heartbeat} and "
            f"renew_deadline {renew_deadline}: the leader must get more than one renewal attempt "
            "before it gives up"
        )
    usable = ttl * (1 - max_drift)
    if renew_deadline + grace >= usable:
        return (
            f"renew_deadline + grace < ttl * (1 - max_drift) is required, but renew_deadline "
            f"{renew_deadline} + grace {grace} = {renew_deadline + grace:.6g} is not below "
            f"ttl {ttl} * (1 - max_drift {max_drift}) = {usable:.6g}: the old master's work must "
            "be stopped before any other node can see the lease expire"
        )
    return None


def _scaled_periods(ttl: float) -> dict[str, float]:
    """The default periods in proportion to ``ttl`` (which must be within its bounds)."""
    # Multiply before dividing: ``3.0 * 2.0 / 5.0`` is exactly the float 1.2, while
    # ``3.0 * (2.0 / 5.0)`` is 1.2000000000000002.
    return {field: seconds * ttl / DEFAULT_TTL for field, seconds in DEFAULT_PERIODS.items()}


def _scaled_fix(ttl: float, max_drift: float) -> str:
    """``Timing.from_ttl(ttl)`` (keeping a ``max_drift`` of the caller's own), if that is valid.

    Most impossible timings come from changing ``ttl`` alone and keeping the other defaults,
    which were made for a 5 s lease; scaling them all is then the fix. With the default ttl the
    caller changed something else, and scaling would only undo it.
    """
    if ttl == DEFAULT_TTL:
        return ""
    scaled = _scaled_periods(ttl)
    if _broken_rule(ttl, max_drift=max_drift, **scaled) is not None:
        return ""
    call = f"Timing.from_ttl({ttl!r})"
    if max_drift != DEFAULT_MAX_DRIFT:
        call += f".replace(max_drift={max_drift!r})"
    shown = ", ".join(f"{field} {seconds:g}" for field, seconds in scaled.items())
    return f"{call} scales every default to that ttl ({shown})"


def _violation(
    ttl: float, heartbeat: float, renew_deadline: float, retry: float, grace: float, max_drift: float
) -> TimingError | None:
    """The first rule broken, with the fix for a caller of ``Timing``; None when all hold."""
    rule = _broken_rule(ttl, heartbeat, renew_deadline, retry, grace, max_drift)
    if rule is None:
        return None
    if rule.startswith("heartbeat <"):
        fixes = [_scaled_fix(ttl, max_drift), f"make heartbeat less than renew_deadline {renew_deadline}"]
    elif rule.startswith("renew_deadline + grace <"):
        least_ttl = (renew_deadline + grace) / (1 - max_drift)
        fixes = [
            _scaled_fix(ttl, max_drift),
            f"make ttl more than {least_ttl:.6g}",
            f"make renew_deadline + grace less than {ttl * (1 - max_drift):.6g}",
        ]
    else:
        return TimingError(rule)
    fix = "; or ".join(f for f in fixes if f)
    return TimingError(rule, f"Fix: {fix}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """How long a lease lasts and how the leader and followers pace themselves (seconds).

    The defaults follow client-go's 15/10/2 proportions scaled to a 5 s lease: renewing every
    second leaves two spare attempts before the renew deadline, and the deadline plus one second
    of grace still ends the old master's work about a second before the lease can expire.
    """

    ttl: float = DEFAULT_TTL
    heartbeat: float = DEFAULT_PERIODS["heartbeat"]
    renew_deadline: float = DEFAULT_PERIODS["renew_deadline"]
    retry: float = DEFAULT_PERIODS["retry"]
    grace: float = DEFAULT_PERIODS["grace"]
    max_drift: float = DEFAULT_MAX_DRIFT

    def __post_init__(self) -> None:
        problem = _violation(
            self.ttl, self.heartbeat, self.renew_deadline, self.retry, self.grace, self.max_drift
        )
        if problem is not None:
            raise ValueError(f"impossible Timing: {problem}")

    @classmethod
    def from_ttl(cls, ttl: float) -> Timing:
        """Scale every duration of the defaults in proportion to ``ttl`` (drift stays).

        ``ttl`` is checked before it is scaled, so that a huge one is refused as a ``ValueError``
        naming its bounds rather than overflowing in the arithmetic.
        """
        refused = check_seconds("ttl", ttl, *DURATION_BOUNDS["ttl"]).swap().value_or(None)
        if refused is not None:
            raise ValueError(f"impossible Timing: {refused}")
        return cls(ttl=ttl, max_drift=DEFAULT_MAX_DRIFT, **_scaled_periods(ttl))

    @property
    def safety_margin(self) -> float:
        """How long a process may freeze, or a backend clock step, without risking two masters."""
        return self.ttl * (1 - self.max_drift) - self.renew_deadline - self.grace

    def replace(self, **changes: float) -> Timing:
        """A copy with some fields changed, validated like any new Timing."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"unknown Timing fields: {', '.join(sorted(unknown))}")
        values.update(changes)
        return Timing(**values)


def validate_timing(
    *,
    ttl: float = DEFAULT_TTL,
    heartbeat: float = DEFAULT_PERIODS["heartbeat"],
    renew_deadline: float = DEFAULT_PERIODS["renew_deadline"],
    retry: float = DEFAULT_PERIODS["retry"],
    grace: float = DEFAULT_PERIODS["grace"],
    max_drift: float = DEFAULT_MAX_DRIFT,
) -> Result[Timing, TimingError]:
    """The same verdict as constructing :class:`Timing`, as a value instead of an exception."""
    problem = _violation(ttl, heartbeat, renew_deadline, retry, grace, max_drift)
    if problem is not None:
        return Failure(problem)
    return Success(
        Timing(
            ttl=ttl,
            heartbeat=heartbeat,
            renew_deadline=renew_deadline,
            retry=retry,
            grace=grace,
            max_drift=max_drift,
        )
    )
