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
    """The rule an impossible timing combination breaks, in words a user can act on."""

    rule: str

    def __str__(self) -> str:
        return self.rule


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


def _violation(
    ttl: float, heartbeat: float, renew_deadline: float, retry: float, grace: float, max_drift: float
) -> str | None:
    """Return the first rule broken, or None. Order: numbers within bounds, then the safety rules."""
    values = {
        "ttl": ttl,
        "heartbeat": heartbeat,
        "renew_deadline": renew_deadline,
        "retry": retry,
        "grace": grace,
    }
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
            f"heartbeat < renew_deadline is required (got heartbeat={heartbeat}, "
            f"renew_deadline={renew_deadline}): the leader must get more than one renewal "
            "attempt before it gives up"
        )
    usable = ttl * (1 - max_drift)
    if renew_deadline + grace >= usable:
        return (
            f"renew_deadline + grace < ttl * (1 - max_drift) is required (got "
            f"{renew_deadline} + {grace} >= {usable:.6g}): the old master's work must be "
            "stopped before any other node can see the lease expire"
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """How long a lease lasts and how the leader and followers pace themselves (seconds).

    The defaults follow client-go's 15/10/2 proportions scaled to a 5 s lease: renewing every
    second leaves two spare attempts before the renew deadline, and the deadline plus one second
    of grace still ends the old master's work about a second before the lease can expire.
    """

    ttl: float = 5.0
    heartbeat: float = 1.0
    renew_deadline: float = 3.0
    retry: float = 1.0
    grace: float = 1.0
    max_drift: float = 0.01

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
        default = cls()

        def scaled(seconds: float) -> float:
            # Multiply before dividing: ``3.0 * 2.0 / 5.0`` is exactly the float 1.2, while
            # ``3.0 * (2.0 / 5.0)`` is 1.2000000000000002.
            return seconds * ttl / default.ttl

        return cls(
            ttl=ttl,
            heartbeat=scaled(default.heartbeat),
            renew_deadline=scaled(default.renew_deadline),
            retry=scaled(default.retry),
            grace=scaled(default.grace),
            max_drift=default.max_drift,
        )

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
    ttl: float = 5.0,
    heartbeat: float = 1.0,
    renew_deadline: float = 3.0,
    retry: float = 1.0,
    grace: float = 1.0,
    max_drift: float = 0.01,
) -> Result[Timing, TimingError]:
    """The same verdict as constructing :class:`Timing`, as a value instead of an exception."""
    problem = _violation(ttl, heartbeat, renew_deadline, retry, grace, max_drift)
    if problem is not None:
        return Failure(TimingError(problem))
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
