"""Pure lock decisions: what to claim, how long to wait, when the leader's lease ends locally."""

from __future__ import annotations

from dataclasses import dataclass, replace

from returns.result import Failure, Result, Success

from gomaster.core.record import LockRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing

#: Followers wake this long after the observed expiry so the backend agrees it has passed.
EXPIRY_SLACK = 0.001


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """An attempt to acquire ``name`` with ``token``, valid only if the row still is ``expected``.

    ``expected`` is the compare-and-set precondition: None means "the row must not exist yet".
    Since every acquisition moves the token from ``expected.token`` to ``token``, at most one
    contender can win each step.
    """

    name: str
    node: NodeIdentity
    token: int
    expected: LockRecord | None
    ttl: float

    @classmethod
    def first(cls, name: str, me: NodeIdentity, ttl: float) -> Claim:
        """The claim that creates the record."""
        return cls(name=name, node=me, token=1, expected=None, ttl=ttl)

    @classmethod
    def after(cls, record: LockRecord, me: NodeIdentity, ttl: float) -> Claim:
        """The claim that takes over a released or expired record, with the next token."""
        return cls(name=record.name, node=me, token=record.token + 1, expected=record, ttl=ttl)


@dataclass(frozen=True, slots=True)
class Held:
    """Someone holds a live lease; ``wait`` is how long it has left by the backend's clock."""

    record: LockRecord
    wait: float


def plan_acquire(seen: Observation, name: str, me: NodeIdentity, timing: Timing) -> Result[Claim, Held]:
    """Claim a lease that is absent, released or expired by the backend's clock; else say when.

    A live lease is never claimed, not even one that names this node: a node that lost track of
    its own lease (a claim whose reply was lost) waits it out and then claims the next token, so
    fenced work never runs twice under one token.
    """
    record = seen.record
    if record is None:
        return Success(Claim.first(name, me, timing.ttl))
    if record.claimable_at(seen.server_now):
        return Success(Claim.after(record, me, timing.ttl))
    return Failure(Held(record, wait=record.expires_at - seen.server_now))


def follower_wake(held: Held, received_at: float, timing: Timing, *, notices: bool = False) -> float:
    """Local time at which a follower should look again, never after the expiry it saw.

    Polling is what notices both a release and a holder that stopped renewing, so without
    release notices a follower looks every ``retry`` (or at the expiry, if that comes first).
    With ``notices`` live a release is heard at once, and looking only serves to notice a lease
    that is no longer renewed: the follower sleeps until ``retry`` before the expiry it saw (or
    ``retry``, whichever is later), and that look either shows a renewed lease (sleep again) or
    one within ``retry`` of expiring, claimed at its expiry as without notices. So a crashed
    holder is taken over exactly as soon, and a live one costs one look per ``ttl - retry``
    instead of one per ``retry``.
    """
    until_expiry = held.wait + EXPIRY_SLACK
    if notices and until_expiry > timing.retry:
        return received_at + max(timing.retry, until_expiry - timing.retry)
    return received_at + min(until_expiry, timing.retry)


def local_deadline(sent_at: float, timing: Timing) -> float:
    """Until when the leader may call itself master after a renewal it *sent* at ``sent_at``.

    Counting from the send (not the reply) is what makes the bound hold: the backend started the
    new lease no earlier than ``sent_at``.
    """
    return sent_at + timing.renew_deadline


#: After a failed renewal the leader tries again this many times per heartbeat.
RENEW_RETRIES_PER_HEARTBEAT = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """The leader's bookkeeping of its own lease, all in its local clock except ``record``."""

    record: LockRecord
    deadline: float
    next_renew: float

    def renewed(self, record: LockRecord, sent_at: float, timing: Timing) -> Lease:
        """The lease after a renewal sent at ``sent_at`` succeeded. The deadline never moves back."""
        fresh = start_lease(record, sent_at, timing)
        return replace(fresh, deadline=max(self.deadline, fresh.deadline))

    def retry_soon(self, now: float, timing: Timing) -> Lease:
        """The lease after a renewal could not reach the backend: try again shortly."""
        return replace(self, next_renew=now + timing.heartbeat / RENEW_RETRIES_PER_HEARTBEAT)


def start_lease(record: LockRecord, sent_at: float, timing: Timing) -> Lease:
    """The leader's lease right after its claim, sent at ``sent_at``, succeeded."""
    return Lease(
        record=record,
        deadline=local_deadline(sent_at, timing),
        next_renew=sent_at + timing.heartbeat,
    )


@dataclass(frozen=True, slots=True)
class ClockSample:
    """The backend's clock (``server``) read by a request sent at local ``sent_at``, taking ``rtt``."""

    sent_at: float
    rtt: float
    server: float


@dataclass(frozen=True, slots=True)
class ClockStep:
    """The backend's clock moved by ``jump`` seconds more (or less) than local time allows."""

    jump: float

    def __str__(self) -> str:
        direction = "forward" if self.jump > 0 else "back"
        return f"backend clock stepped {direction} by {abs(self.jump):.3f} s"


def check_clock(
    before: ClockSample | None, after: ClockSample, timing: Timing
) -> Result[ClockSample, ClockStep]:
    """Compare backend time against local elapsed time between two reads.

    The backend read its clock somewhere inside each round trip, so between the two reads our
    clock advanced by some ``local`` in ``[elapsed - before.rtt, elapsed + after.rtt]``. Our rate
    is within ``max_drift`` of the backend's, so the backend advanced ``local / rate`` with
    ``rate`` in ``[1 - max_drift, 1 + max_drift]``: dividing (not multiplying) keeps the window
    exact however long ``elapsed`` is. Anything outside that window by more than the safety
    margin is a step of the backend's clock, which breaks the lease arithmetic, so the caller
    demotes.
    """
    if before is None or after.sent_at <= before.sent_at:
        return Success(after)
    elapsed = after.sent_at - before.sent_at
    lowest = (elapsed - before.rtt) / (1 + timing.max_drift)
    highest = (elapsed + after.rtt) / (1 - timing.max_drift)
    advanced = after.server - before.server
    if advanced > highest + timing.safety_margin:
        return Failure(ClockStep(advanced - highest))
    if advanced < lowest - timing.safety_margin:
        return Failure(ClockStep(advanced - lowest))
    return Success(after)
