"""The election as a sans-IO state machine: ``step(config, state, input) -> (state, commands)``.

The machine never performs I/O and never reads a clock. Its caller (the runtime elector, or the
simulation) executes the commands in order, feeds back every result as an input, and feeds a
``Tick`` no later than the time the final ``WaitUntil`` names. Same inputs, same outputs.

The four rules it keeps and every transition are in docs/concepts.md ("The election state
machine"); ``SendRelease`` is fire-and-forget and may queue behind a request in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from returns.result import Failure, Result, Success

from gomaster.core.decide import (
    Claim,
    ClockSample,
    Lease,
    check_clock,
    follower_wake,
    plan_acquire,
    start_lease,
)
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.events import Announcement, Demoted, DemotionReason, Elected, Renewed
from gomaster.core.record import LockRecord, MalformedRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing

Request: TypeAlias = Literal["observe", "claim", "renew"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """What does not change during one election: the lock, this node, and its timings."""

    name: str
    me: NodeIdentity
    timing: Timing


# ---- states -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Follower:
    """Not master. Looks at the lock at ``next_attempt`` (local clock) unless a request is out.

    ``recheck``: a release notice came while a look was out, so look again at once even if
    that look saw the lock held. ``stopping``: a stop came while a claim was out; the node
    stops when the answer arrives, releasing the lease if the claim won. ``expiring``: the
    live lease last seen, due to expire by ``next_attempt``; then the node claims it straight
    away instead of looking first. The claim is a compare-and-set that the backend grants only
    if that record is unchanged and expired by its own clock, so skipping the look is safe and
    saves a round trip in every failover; if the holder renewed after all, the claim comes
    back as a ``Conflict`` and the node looks again at once. (With release notices live, a
    follower that saw a long lease sleeps until ``retry`` before its expiry and looks once
    more: only a lease seen within ``retry`` of expiring is claimed this way.)
    """

    next_attempt: float
    inflight: Request | None = None
    clock: ClockSample | None = None
    recheck: bool = False
    stopping: bool = False
    expiring: LockRecord | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Leader:
    """Master under ``lease.record.token`` until local ``lease.deadline`` unless renewed."""

    lease: Lease
    inflight: Request | None = None
    clock: ClockSample | None = None


@dataclass(frozen=True, slots=True)
class Stopped:
    """Final: the node left the election."""


State: TypeAlias = Follower | Leader | Stopped


def initial(now: float) -> Follower:
    """A node that has just joined: it looks at the lock at once."""
    return Follower(next_attempt=now)


# ---- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Local time has reached ``now``."""

    now: float


@dataclass(frozen=True, slots=True)
class Observed:
    """The answer to ``Observe``, sent at local ``sent_at`` and received at ``now``.

    ``notices``: release notices for this name were live from before ``sent_at`` until ``now``,
    so any release after this look is heard as a ``Notified``. Only then may a follower that
    saw a live lease sleep longer than ``retry`` (see :func:`follower_wake`); when unsure, the
    caller leaves it False, which costs looks but never a late takeover.
    """

    outcome: Result[Observation, BackendError | MalformedRecord]
    sent_at: float
    now: float
    notices: bool = False


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The answer to ``SendClaim``."""

    outcome: Result[LockRecord, Conflict | BackendError]
    sent_at: float
    now: float


@dataclass(frozen=True, slots=True)
class RenewResult:
    """The answer to ``SendRenew``."""

    outcome: Result[LockRecord, Lost | BackendError]
    sent_at: float
    now: float


@dataclass(frozen=True, slots=True)
class Notified:
    """The backend told us the lock was released: look now instead of at the next poll."""

    now: float


@dataclass(frozen=True, slots=True)
class ResignRequested:
    """Step down, release, and stay out of the contest for one ttl."""

    now: float


@dataclass(frozen=True, slots=True)
class StopRequested:
    """Leave the election for good, releasing the lease if we hold it."""

    now: float


Input: TypeAlias = Tick | Observed | ClaimResult | RenewResult | Notified | ResignRequested | StopRequested

# ---- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observe:
    """Read the record and the backend's clock; answer with ``Observed``."""

    name: str
    timeout: float


@dataclass(frozen=True, slots=True)
class SendClaim:
    """Execute the compare-and-set claim; answer with ``ClaimResult``."""

    claim: Claim
    timeout: float


@dataclass(frozen=True, slots=True)
class SendRenew:
    """Extend our lease by ``ttl`` from the backend's now; answer with ``RenewResult``."""

    record: LockRecord
    ttl: float
    timeout: float


@dataclass(frozen=True, slots=True)
class SendRelease:
    """Mark our lease released (token kept). No answer is expected."""

    record: LockRecord
    timeout: float


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell the supervisor about mastership. ``Demoted`` must be fully acted on before the next
    command runs: that is what stops the work before the release."""

    event: Announcement


@dataclass(frozen=True, slots=True)
class Warn:
    """Something an operator should see in the log; the machine already acted on it."""

    message: str


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Feed a ``Tick`` no later than local time ``at`` (earlier inputs are welcome)."""

    at: float


Command: TypeAlias = Observe | SendClaim | SendRenew | SendRelease | Announce | Warn | WaitUntil
Step: TypeAlias = tuple[State, tuple[Command, ...]]


_ANSWERS: dict[type, Request] = {Observed: "observe", ClaimResult: "claim", RenewResult: "renew"}

# ---- transitions --------------------------------------------------------------------------


def step(config: Config, state: State, event: Input) -> Step:
    """Advance the election by one input. Pure: same arguments, same result."""
    match state:
        case Stopped():
            return state, ()
        case Leader():
            return _lead(config, state, event)
        case Follower():
            return _follow(config, state, event)


def _demote(config: Config, leader: Leader, now: float, reason: DemotionReason, *, release: bool) -> Step:
    token = leader.lease.record.token
    retry_at = now + (config.timing.ttl if reason == "resigned" else config.timing.retry)
    follower = Follower(next_attempt=retry_at, inflight=leader.inflight, clock=leader.clock)
    commands: list[Command] = [Announce(Demoted(token=token, reason=reason))]
    # A release may queue behind a renewal still out: it is a compare-and-set on our token, so
    # it frees the lease early if that renewal went through, and does nothing otherwise.
    if release:
        commands.append(SendRelease(leader.lease.record, timeout=config.timing.renew_deadline))
    commands.append(WaitUntil(retry_at))
    return follower, tuple(commands)


def _leader_due(config: Config, leader: Leader, now: float) -> Step:
    """The leader at ``now``: demote past the deadline, renew when due, else sleep."""
    lease = leader.lease
    if now >= lease.deadline:
        return _demote(config, leader, now, "deadline", release=True)
    if leader.inflight is None and now >= lease.next_renew:
        sending = replace(leader, inflight="renew")
        remaining = lease.deadline - now
        renew = SendRenew(lease.record, config.timing.ttl, timeout=remaining)
        return sending, (renew, WaitUntil(lease.deadline))
    wake = lease.deadline if leader.inflight is not None else min(lease.next_renew, lease.deadline)
    return leader, (WaitUntil(wake),)


def _lead(config: Config, leader: Leader, event: Input) -> Step:
    timing = config.timing
    match event:
        case StopRequested(now=now):
            _, commands = _demote(config, leader, now, "stopped", release=True)
            return Stopped(), tuple(c for c in commands if not isinstance(c, WaitUntil))
        case ResignRequested(now=now):
            return _demote(config, leader, now, "resigned", release=True)
        case RenewResult(outcome=outcome, sent_at=sent_at, now=now) if leader.inflight == "renew":
            leader = replace(leader, inflight=None)
            match outcome:
                case Success(record):
                    sample = ClockSample(sent_at, now - sent_at, record.renewed_at)
                    match check_clock(leader.clock, sample, timing):
                        case Failure(jump):
                            state, commands = _demote(config, leader, now, "clock-step", release=True)
                            return state, (Warn(f"{jump}; demoting to stay safe"), *commands)
                    lapsed = now >= leader.lease.deadline
                    lease = leader.lease.renewed(record, sent_at, timing)
                    leader = Leader(lease=lease, inflight=None, clock=sample)
                    if lapsed:
                        # The deadline passed while the renewal was out: the work has stopped by
                        # then (workers and guards watch the published deadline, not this answer),
                        # so the tenure ends although the renewal went through, and the release
                        # frees what it extended. Here a passed deadline is final (the guard's
                        # resume covers an answer that came before it but was published after).
                        return _demote(config, leader, now, "deadline", release=True)
                    renewed = Announce(
                        Renewed(token=record.token, deadline=lease.deadline, expires_at=record.expires_at)
                    )
                    state, commands = _leader_due(config, leader, now)
                    return state, (renewed, *commands)
                case Failure(Lost() as lost):
                    state, commands = _demote(config, leader, now, "lost", release=False)
                    return state, (Warn(str(lost)), *commands)
                case Failure(error):
                    leader = replace(leader, lease=leader.lease.retry_soon(now, timing))
                    state, commands = _leader_due(config, leader, now)
                    return state, (Warn(f"renewal failed: {error}"), *commands)
        case Observed(now=now) | ClaimResult(now=now) | RenewResult(now=now):
            # An answer to a request this leader did not send: drop it.
            return _leader_due(config, leader, now)
        case Tick(now=now) | Notified(now=now):
            return _leader_due(config, leader, now)
    raise AssertionError(f"unhandled input {event!r}")  # pragma: no cover


def _follower_due(config: Config, follower: Follower, now: float) -> Step:
    """The follower at ``now``: claim an expiring lease or observe when due and nothing is out,
    else sleep."""
    if follower.inflight is None and now >= follower.next_attempt and follower.expiring is not None:
        claim = Claim.after(follower.expiring, config.me, config.timing.ttl)
        return replace(follower, inflight="claim", expiring=None), (
            SendClaim(claim, timeout=config.timing.renew_deadline),
            WaitUntil(now + config.timing.retry),
        )
    if follower.inflight is None and now >= follower.next_attempt:
        return replace(follower, inflight="observe"), (
            Observe(config.name, timeout=config.timing.renew_deadline),
            WaitUntil(now + config.timing.retry),
        )
    if follower.inflight is not None:
        return follower, (WaitUntil(max(follower.next_attempt, now + config.timing.retry)),)
    return follower, (WaitUntil(follower.next_attempt),)


def _follow(config: Config, follower: Follower, event: Input) -> Step:
    timing = config.timing
    match event:
        case StopRequested(now=now) if follower.inflight == "claim":
            return replace(follower, stopping=True), (WaitUntil(now + timing.renew_deadline),)
        case StopRequested():
            return Stopped(), ()
        case ClaimResult(outcome=outcome) if follower.stopping:
            match outcome:
                case Success(record):
                    return Stopped(), (SendRelease(record, timeout=timing.renew_deadline),)
            return Stopped(), ()
        case Tick(now=now) if follower.stopping:
            if follower.inflight is None:
                return Stopped(), ()
            return follower, (WaitUntil(now + timing.renew_deadline),)
        case ResignRequested(now=now):
            follower = replace(follower, next_attempt=now + timing.ttl, expiring=None)
            return _follower_due(config, follower, now)
        case Notified(now=now):
            # A release changed the record: a claim against the one seen before would conflict.
            recheck = follower.inflight is not None
            follower = replace(follower, next_attempt=now, recheck=recheck, expiring=None)
            return _follower_due(config, follower, now)
        case Observed(outcome=outcome, sent_at=sent_at, now=now, notices=notices) if (
            follower.inflight == "observe"
        ):
            follower = replace(follower, inflight=None)
            match outcome:
                case Success(seen):
                    clock = ClockSample(sent_at, now - sent_at, seen.server_now)
                    follower = replace(follower, clock=clock)
                    match plan_acquire(seen, config.name, config.me, timing):
                        case Success(claim):
                            claiming = replace(follower, inflight="claim")
                            return claiming, (
                                SendClaim(claim, timeout=timing.renew_deadline),
                                WaitUntil(now + timing.retry),
                            )
                        case Failure(held):
                            wake = (
                                now if follower.recheck else follower_wake(held, now, timing, notices=notices)
                            )
                            expiring = held.record if wake >= now + held.wait else None
                            follower = replace(follower, next_attempt=wake, recheck=False, expiring=expiring)
                            return _follower_due(config, follower, now)
                case Failure(error):
                    follower = replace(follower, next_attempt=now + timing.retry)
                    state, commands = _follower_due(config, follower, now)
                    return state, (Warn(f"cannot observe lock {config.name!r}: {error}"), *commands)
        case ClaimResult(outcome=outcome, sent_at=sent_at, now=now) if follower.inflight == "claim":
            follower = replace(follower, inflight=None)
            match outcome:
                case Success(record):
                    lease = start_lease(record, sent_at, timing)
                    if now >= lease.deadline:
                        late = SendRelease(record, timeout=timing.renew_deadline)
                        state, commands = _follower_due(
                            config, replace(follower, next_attempt=now + timing.retry), now
                        )
                        return state, (Warn("claim answered after the renew deadline"), late, *commands)
                    leader = Leader(lease=lease, clock=follower.clock)
                    elected = Elected(
                        name=config.name,
                        node_id=config.me.node_id,
                        token=record.token,
                        since=record.acquired_at,
                        deadline=lease.deadline,
                    )
                    state, commands = _leader_due(config, leader, now)
                    return state, (Announce(elected), *commands)
                case Failure(Conflict()):
                    return _follower_due(config, replace(follower, next_attempt=now), now)
                case Failure(error):
                    follower = replace(follower, next_attempt=now + timing.retry)
                    state, commands = _follower_due(config, follower, now)
                    return state, (Warn(f"claim failed: {error}"), *commands)
        case Observed(now=now) | ClaimResult(now=now) | RenewResult(now=now):
            # A stale answer, e.g. the renewal that was out when we demoted: drop it, but it is
            # no longer in flight.
            if follower.inflight == _ANSWERS[type(event)]:
                follower = replace(follower, inflight=None)
            return _follower_due(config, follower, now)
        case Tick(now=now):
            return _follower_due(config, follower, now)
    raise AssertionError(f"unhandled input {event!r}")  # pragma: no cover
