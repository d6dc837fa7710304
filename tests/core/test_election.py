"""The election machine, driven with plain values the way h11's tests drive its connection.

Every test feeds inputs one at a time and checks the state and the commands after each step.
Times are the node's local clock; the backend's clock runs ``SERVER`` seconds ahead of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from gomaster.core.decide import EXPIRY_SLACK, RENEW_RETRIES_PER_HEARTBEAT, Claim, ClockSample, Lease
from gomaster.core.election import (
    Announce,
    ClaimResult,
    Command,
    Config,
    Follower,
    Input,
    Leader,
    Notified,
    Observe,
    Observed,
    RenewResult,
    ResignRequested,
    SendClaim,
    SendRelease,
    SendRenew,
    State,
    Stopped,
    StopRequested,
    Tick,
    WaitUntil,
    Warn,
    initial,
    step,
)
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.events import Demoted, Elected, Renewed
from gomaster.core.record import LockRecord, MalformedRecord, Observation
from gomaster.core.timing import Timing
from tests.core.strategies import NAME, identity, record

ME = identity("a")
TIMING = Timing()
CONFIG = Config(name=NAME, me=ME, timing=TIMING)
T0 = 100.0
SERVER = 1_700_000_000.0
RTT = 0.125
UNREACHABLE = BackendError("test://", "connection refused")


def server(local: float) -> float:
    """The backend's clock when ours reads ``local``: same rate, another origin."""
    return SERVER + local


def held_by_me(token: int, at: float) -> LockRecord:
    """The record a claim or renewal by this node answered at backend time ``server(at)``."""
    return record(holder="a", token=token, acquired_at=server(at), expires_at=server(at) + TIMING.ttl)


def observe_at(now: float) -> Follower:
    """A follower that has just sent its observation at ``now``."""
    state, commands = step(CONFIG, initial(now), Tick(now))
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)
    assert isinstance(state, Follower)
    return state


def elect(token: int = 1, sent_at: float = T0) -> Leader:
    """A leader whose claim for ``token`` was sent at ``sent_at`` and answered one RTT later."""
    follower = observe_at(sent_at - RTT)
    seen = Observation(
        None if token == 1 else record(holder="", token=token - 1, expires_at=0.0), server(sent_at)
    )
    state, _ = step(CONFIG, follower, Observed(Success(seen), sent_at - RTT, sent_at))
    state, _ = step(CONFIG, state, ClaimResult(Success(held_by_me(token, sent_at)), sent_at, sent_at + RTT))
    assert isinstance(state, Leader)
    return state


def renewing(leader: Leader, at: float) -> Leader:
    """The leader after its renewal went out at ``at``."""
    state, commands = step(CONFIG, leader, Tick(at))
    assert isinstance(commands[0], SendRenew), f"expected a renewal at {at}, got {commands}"
    assert isinstance(state, Leader)
    return state


def renewed(leader: Leader, sent_at: float, now: float) -> tuple[State, tuple[Command, ...]]:
    """Feed a successful answer to the renewal sent at ``sent_at``."""
    answer = replace(leader.lease.record, renewed_at=server(sent_at), expires_at=server(sent_at) + TIMING.ttl)
    return step(CONFIG, leader, RenewResult(Success(answer), sent_at, now))


# ---- following and claiming ---------------------------------------------------------------


def test_a_new_node_looks_at_the_lock_at_once() -> None:
    joined = initial(T0)
    assert joined == Follower(next_attempt=T0)
    state, commands = step(CONFIG, joined, Tick(T0))
    assert state == Follower(next_attempt=T0, inflight="observe")
    assert commands == (Observe(NAME, timeout=TIMING.renew_deadline), WaitUntil(T0 + TIMING.retry))


def test_a_free_lock_is_claimed_with_token_one() -> None:
    state, commands = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(None, server(T0))), T0, T0 + RTT)
    )
    assert state == Follower(next_attempt=T0, inflight="claim", clock=ClockSample(T0, RTT, server(T0)))
    claim = Claim.first(NAME, ME, TIMING.ttl)
    assert commands == (SendClaim(claim, timeout=TIMING.renew_deadline), WaitUntil(T0 + RTT + TIMING.retry))


def test_a_released_lock_is_claimed_with_its_token_plus_one() -> None:
    released = record(holder="", token=41, expires_at=server(T0) - 1.0)
    state, commands = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(released, server(T0))), T0, T0)
    )
    assert isinstance(state, Follower) and state.inflight == "claim"
    assert commands[0] == SendClaim(Claim.after(released, ME, TIMING.ttl), timeout=TIMING.renew_deadline)
    assert isinstance(commands[0], SendClaim) and commands[0].claim.token == 42


def test_a_won_claim_elects_with_the_deadline_counted_from_the_claims_send() -> None:
    follower = observe_at(T0)
    claiming, _ = step(CONFIG, follower, Observed(Success(Observation(None, server(T0))), T0, T0 + RTT))
    sent_at = T0 + RTT
    won = held_by_me(1, sent_at + 0.2)
    state, commands = step(CONFIG, claiming, ClaimResult(Success(won), sent_at, sent_at + 0.5))
    deadline = sent_at + TIMING.renew_deadline
    assert state == Leader(
        lease=Lease(record=won, deadline=deadline, next_renew=sent_at + TIMING.heartbeat),
        clock=ClockSample(T0, RTT, server(T0)),
    )
    elected = Elected(name=NAME, node_id=ME.node_id, token=1, since=won.acquired_at, deadline=deadline)
    assert commands == (Announce(elected), WaitUntil(sent_at + TIMING.heartbeat))


def test_a_live_lease_of_another_node_wakes_the_follower_at_its_expiry() -> None:
    soon = record(holder="b", expires_at=server(T0) + 0.375)
    state, commands = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(soon, server(T0))), T0, T0 + RTT)
    )
    wake = T0 + RTT + (0.375 + EXPIRY_SLACK)
    assert state == Follower(next_attempt=wake, clock=ClockSample(T0, RTT, server(T0)), expiring=soon)
    assert commands == (WaitUntil(wake),)


def test_at_the_expiry_the_follower_claims_the_lease_it_saw_without_looking_again() -> None:
    soon = record(holder="b", token=8, expires_at=server(T0) + 0.375)
    state, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(soon, server(T0))), T0, T0 + RTT))
    wake = T0 + RTT + (0.375 + EXPIRY_SLACK)
    early, commands = step(CONFIG, state, Tick(wake - 0.01))
    assert early == state and commands == (WaitUntil(wake),)
    state, commands = step(CONFIG, state, Tick(wake))
    assert isinstance(state, Follower) and state.inflight == "claim" and state.expiring is None
    # The compare-and-set names the record seen: only that record, expired by the backend's
    # clock, can be replaced, and the token moves on by one.
    claim = Claim.after(soon, ME, TIMING.ttl)
    assert claim.token == 9 and claim.expected == soon
    assert commands == (SendClaim(claim, timeout=TIMING.renew_deadline), WaitUntil(wake + TIMING.retry))


def test_a_claim_at_the_expiry_that_meets_a_renewed_lease_looks_again_at_once() -> None:
    soon = record(holder="b", expires_at=server(T0) + 0.375)
    state, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(soon, server(T0))), T0, T0 + RTT))
    wake = T0 + RTT + (0.375 + EXPIRY_SLACK)
    state, _ = step(CONFIG, state, Tick(wake))
    state, commands = step(CONFIG, state, ClaimResult(Failure(Conflict(NAME)), wake, wake + RTT))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)


def test_a_release_notice_makes_a_follower_look_rather_than_claim_the_record_it_saw() -> None:
    soon = record(holder="b", expires_at=server(T0) + 0.375)
    state, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(soon, server(T0))), T0, T0 + RTT))
    state, commands = step(CONFIG, state, Notified(T0 + 0.2))
    assert isinstance(state, Follower) and state.inflight == "observe" and state.expiring is None
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)


def test_a_long_lease_of_another_node_is_polled_every_retry() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    state, commands = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(later, server(T0))), T0, T0 + RTT)
    )
    assert isinstance(state, Follower) and state.inflight is None
    assert commands == (WaitUntil(T0 + RTT + TIMING.retry),)


def test_with_notices_a_follower_sleeps_on_a_long_lease_until_retry_before_its_expiry() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    seen = Observed(Success(Observation(later, server(T0))), T0, T0 + RTT, notices=True)
    state, commands = step(CONFIG, observe_at(T0), seen)
    wake = T0 + RTT + (4.0 + EXPIRY_SLACK - TIMING.retry)
    assert state == Follower(next_attempt=wake, clock=ClockSample(T0, RTT, server(T0)))
    assert commands == (WaitUntil(wake),), "a follower with live notices polled every retry"


def test_with_notices_a_lease_no_longer_renewed_is_claimed_at_its_expiry() -> None:
    """The holder crashed: the look at expiry - retry shows the same lease, which is then
    claimed at its expiry, exactly as soon as a follower polling every retry would."""
    later = record(holder="b", token=4, expires_at=server(T0) + 4.0)
    seen = Observed(Success(Observation(later, server(T0))), T0, T0 + RTT, notices=True)
    state, _ = step(CONFIG, observe_at(T0), seen)
    assert isinstance(state, Follower)
    look = state.next_attempt
    state, commands = step(CONFIG, state, Tick(look))
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)
    again = Observed(Success(Observation(later, server(look))), look, look + RTT, notices=True)
    state, commands = step(CONFIG, state, again)
    expiry = look + RTT + (server(T0) + 4.0 - server(look)) + EXPIRY_SLACK
    assert isinstance(state, Follower) and state.expiring == later
    assert commands == (WaitUntil(expiry),)
    state, commands = step(CONFIG, state, Tick(expiry))
    claim = Claim.after(later, ME, TIMING.ttl)
    assert commands[0] == SendClaim(claim, timeout=TIMING.renew_deadline)
    assert expiry <= T0 + RTT + 4.0 + EXPIRY_SLACK + RTT, "the takeover came later than without notices"


def test_with_notices_a_renewed_lease_is_looked_at_again_only_near_its_new_expiry() -> None:
    first = record(holder="b", expires_at=server(T0) + 4.0)
    state, _ = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(first, server(T0))), T0, T0, notices=True)
    )
    assert isinstance(state, Follower)
    look = state.next_attempt
    state, _ = step(CONFIG, state, Tick(look))
    renewed = replace(first, renewed_at=server(look) - 0.5, expires_at=server(look) + 4.5)
    state, commands = step(
        CONFIG, state, Observed(Success(Observation(renewed, server(look))), look, look, notices=True)
    )
    assert isinstance(state, Follower) and state.expiring is None
    assert commands == (WaitUntil(look + 4.5 + EXPIRY_SLACK - TIMING.retry),)


def test_without_notices_a_look_at_a_long_lease_polls_every_retry() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    seen = Observed(Success(Observation(later, server(T0))), T0, T0 + RTT, notices=False)
    _, commands = step(CONFIG, observe_at(T0), seen)
    assert commands == (WaitUntil(T0 + RTT + TIMING.retry),)


def test_with_notices_a_release_notice_wakes_the_sleeping_follower_at_once() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    state, _ = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(later, server(T0))), T0, T0, notices=True)
    )
    state, commands = step(CONFIG, state, Notified(T0 + 0.2))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)


def test_a_node_waits_out_its_own_live_lease_after_losing_its_claim_reply() -> None:
    forgotten = held_by_me(7, T0 - 1.0)
    state, commands = step(
        CONFIG, observe_at(T0), Observed(Success(Observation(forgotten, server(T0))), T0, T0 + RTT)
    )
    assert isinstance(state, Follower) and state.inflight is None
    assert commands == (WaitUntil(T0 + RTT + TIMING.retry),), "a live lease was claimed again"


def test_a_follower_sleeping_on_a_live_lease_observes_when_woken() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    state, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(later, server(T0))), T0, T0 + RTT))
    early, commands = step(CONFIG, state, Tick(T0 + 0.5))
    assert early == state, "a tick before the wake-up time changed the follower"
    assert commands == (WaitUntil(T0 + RTT + TIMING.retry),)
    state, commands = step(CONFIG, state, Tick(T0 + RTT + TIMING.retry))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)


def test_a_notified_follower_looks_at_once() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    state, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(later, server(T0))), T0, T0 + RTT))
    state, commands = step(CONFIG, state, Notified(T0 + 0.2))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert commands == (Observe(NAME, timeout=TIMING.renew_deadline), WaitUntil(T0 + 0.2 + TIMING.retry))


def test_a_notification_while_observing_waits_for_the_answer_then_looks_again() -> None:
    state = observe_at(T0)
    after, commands = step(CONFIG, state, Notified(T0 + 0.1))
    assert after == replace(state, next_attempt=T0 + 0.1, recheck=True)
    assert commands == (WaitUntil(T0 + 0.1 + TIMING.retry),), "a second request went out"
    # The look that was out saw the lock still held (it read before the release): look again now.
    held = record(holder="b", expires_at=server(T0) + 4.0)
    again, commands = step(CONFIG, after, Observed(Success(Observation(held, server(T0))), T0, T0 + 0.15))
    assert isinstance(again, Follower) and again.inflight == "observe" and not again.recheck
    assert commands[0] == Observe(NAME, timeout=TIMING.renew_deadline)


def test_a_stop_during_a_claim_releases_the_lease_if_the_claim_won() -> None:
    claiming, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(None, server(T0))), T0, T0))
    assert isinstance(claiming, Follower) and claiming.inflight == "claim"
    stopping, _ = step(CONFIG, claiming, StopRequested(T0 + 0.01))
    assert isinstance(stopping, Follower) and stopping.stopping
    won = record(holder=ME.node_id, token=1, expires_at=server(T0) + TIMING.ttl)
    final, commands = step(CONFIG, stopping, ClaimResult(Success(won), T0, T0 + 0.02))
    assert isinstance(final, Stopped)
    assert commands == (SendRelease(won, timeout=TIMING.renew_deadline),)


def test_a_lost_claim_race_looks_again_at_once() -> None:
    claiming, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(None, server(T0))), T0, T0))
    state, commands = step(CONFIG, claiming, ClaimResult(Failure(Conflict(NAME)), T0, T0 + RTT))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert commands == (Observe(NAME, timeout=TIMING.renew_deadline), WaitUntil(T0 + RTT + TIMING.retry))


def test_an_unreachable_backend_is_tried_again_after_one_retry() -> None:
    state, commands = step(CONFIG, observe_at(T0), Observed(Failure(UNREACHABLE), T0, T0 + 3.0))
    assert state == Follower(next_attempt=T0 + 3.0 + TIMING.retry)
    assert (
        len(commands) == 2 and isinstance(commands[0], Warn) and "connection refused" in commands[0].message
    )
    assert commands[1] == WaitUntil(T0 + 3.0 + TIMING.retry)


def test_a_malformed_record_is_waited_out_like_an_outage() -> None:
    broken = MalformedRecord(NAME, "token is None")
    state, commands = step(CONFIG, observe_at(T0), Observed(Failure(broken), T0, T0 + RTT))
    assert state == Follower(next_attempt=T0 + RTT + TIMING.retry)
    assert isinstance(commands[0], Warn) and "malformed" in commands[0].message


def test_a_failed_claim_is_tried_again_after_one_retry() -> None:
    claiming, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(None, server(T0))), T0, T0))
    state, commands = step(CONFIG, claiming, ClaimResult(Failure(UNREACHABLE), T0, T0 + 1.0))
    assert isinstance(state, Follower) and state.inflight is None
    assert state.next_attempt == T0 + 1.0 + TIMING.retry
    assert isinstance(commands[0], Warn) and commands[1:] == (WaitUntil(T0 + 1.0 + TIMING.retry),)


def test_a_claim_answered_after_its_deadline_is_released_not_announced() -> None:
    claiming, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(None, server(T0))), T0, T0))
    won = held_by_me(1, T0 + 0.1)
    late = T0 + TIMING.renew_deadline
    state, commands = step(CONFIG, claiming, ClaimResult(Success(won), T0, late))
    assert isinstance(state, Follower) and state.inflight is None
    assert not any(isinstance(c, Announce) for c in commands), "work started on a claim past its deadline"
    assert isinstance(commands[0], Warn)
    assert commands[1] == SendRelease(won, timeout=TIMING.renew_deadline)
    assert commands[-1] == WaitUntil(late + TIMING.retry)


# ---- leading ------------------------------------------------------------------------------


def test_the_leader_renews_one_heartbeat_after_the_claim_was_sent() -> None:
    leader = elect(sent_at=T0)
    early, commands = step(CONFIG, leader, Tick(T0 + 0.5))
    assert early == leader
    assert commands == (WaitUntil(T0 + TIMING.heartbeat),)
    due = T0 + TIMING.heartbeat
    state, commands = step(CONFIG, leader, Tick(due))
    assert state == replace(leader, inflight="renew")
    deadline = leader.lease.deadline
    assert commands == (
        SendRenew(leader.lease.record, TIMING.ttl, timeout=deadline - due),
        WaitUntil(deadline),
    )


def test_a_renewal_extends_the_deadline_from_its_own_send_not_its_answer() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    out = renewing(leader, sent_at)
    answered = sent_at + 0.75
    state, commands = renewed(out, sent_at, answered)
    assert isinstance(state, Leader) and state.inflight is None
    assert state.lease.deadline == sent_at + TIMING.renew_deadline, "the deadline must count from the send"
    assert state.lease.next_renew == sent_at + TIMING.heartbeat
    assert state.clock == ClockSample(sent_at, 0.75, server(sent_at))
    assert commands == (
        Announce(
            Renewed(
                token=1,
                deadline=sent_at + TIMING.renew_deadline,
                expires_at=server(sent_at) + TIMING.ttl,
            )
        ),
        WaitUntil(sent_at + TIMING.heartbeat),
    )


def test_a_hung_renewal_demotes_at_the_deadline_before_anything_else() -> None:
    leader = elect(sent_at=T0)
    out = renewing(leader, T0 + TIMING.heartbeat)
    deadline = leader.lease.deadline
    before, commands = step(CONFIG, out, Tick(deadline - 0.001))
    assert before == out
    assert commands == (WaitUntil(deadline),)
    state, commands = step(CONFIG, out, Tick(deadline))
    assert commands[0] == Announce(Demoted(token=1, reason="deadline"))
    # The release queues behind the hung renewal: a compare-and-set on our token, after the demotion.
    assert commands[1:] == (
        SendRelease(leader.lease.record, timeout=TIMING.renew_deadline),
        WaitUntil(deadline + TIMING.retry),
    )
    assert state == Follower(next_attempt=deadline + TIMING.retry, inflight="renew", clock=out.clock)


def test_the_late_answer_to_a_hung_renewal_is_dropped_and_clears_the_inflight_marker() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    demoted, _ = step(CONFIG, renewing(leader, sent_at), Tick(leader.lease.deadline))
    assert isinstance(demoted, Follower) and demoted.inflight == "renew"
    waiting, commands = step(CONFIG, demoted, Tick(demoted.next_attempt))
    assert waiting == demoted, "observed while the old renewal was still out"
    assert commands == (WaitUntil(demoted.next_attempt + TIMING.retry),)
    late = demoted.next_attempt + 0.5
    answer = replace(leader.lease.record, renewed_at=server(sent_at), expires_at=server(sent_at) + TIMING.ttl)
    state, commands = step(CONFIG, demoted, RenewResult(Success(answer), sent_at, late))
    assert isinstance(state, Follower) and state.inflight == "observe"
    assert not any(isinstance(c, Announce) for c in commands), "a dropped renewal re-elected the node"
    assert commands == (Observe(NAME, timeout=TIMING.renew_deadline), WaitUntil(late + TIMING.retry))


def test_demotion_is_announced_before_the_release() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    failed, commands = step(
        CONFIG, renewing(leader, sent_at), RenewResult(Failure(UNREACHABLE), sent_at, sent_at)
    )
    assert isinstance(failed, Leader) and failed.inflight is None
    assert failed.lease.deadline == leader.lease.deadline, "a failed renewal moved the deadline"
    assert isinstance(commands[0], Warn)
    deadline = leader.lease.deadline
    state, commands = step(
        CONFIG, replace(failed, lease=replace(failed.lease, next_renew=deadline)), Tick(deadline)
    )
    assert commands == (
        Announce(Demoted(token=1, reason="deadline")),
        SendRelease(leader.lease.record, timeout=TIMING.renew_deadline),
        WaitUntil(deadline + TIMING.retry),
    )
    assert state == Follower(next_attempt=deadline + TIMING.retry, clock=leader.clock)


def test_a_failed_renewal_is_retried_within_the_heartbeat() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    now = sent_at + 0.2
    state, commands = step(CONFIG, renewing(leader, sent_at), RenewResult(Failure(UNREACHABLE), sent_at, now))
    retry_at = now + TIMING.heartbeat / RENEW_RETRIES_PER_HEARTBEAT
    assert state == replace(leader, lease=replace(leader.lease, next_renew=retry_at))
    assert isinstance(commands[0], Warn) and "renewal failed" in commands[0].message
    assert commands[1:] == (WaitUntil(retry_at),)


def test_a_lost_lease_demotes_without_releasing() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    now = sent_at + RTT
    lost = Lost(leader.lease.record)
    state, commands = step(CONFIG, renewing(leader, sent_at), RenewResult(Failure(lost), sent_at, now))
    assert state == Follower(next_attempt=now + TIMING.retry, clock=leader.clock)
    assert isinstance(commands[0], Warn)
    assert commands[1:] == (Announce(Demoted(token=1, reason="lost")), WaitUntil(now + TIMING.retry))


def test_a_renewal_answered_after_the_deadline_demotes() -> None:
    leader = elect(sent_at=T0)
    sent_at = leader.lease.deadline - 0.5
    out = renewing(replace(leader, lease=replace(leader.lease, next_renew=sent_at)), sent_at)
    late = sent_at + TIMING.renew_deadline
    state, commands = renewed(out, sent_at, late)
    assert isinstance(state, Follower)
    assert commands[0] == Announce(Demoted(token=1, reason="deadline"))
    assert commands[1] == SendRelease(
        replace(out.lease.record, renewed_at=server(sent_at), expires_at=server(sent_at) + TIMING.ttl),
        timeout=TIMING.renew_deadline,
    )


def test_a_renewal_that_went_through_but_answered_after_the_deadline_ends_the_tenure() -> None:
    """Its answer comes before the deadline it would set, but after the one the work watches: the
    work has stopped, so the tenure must end rather than run on with nothing working."""
    leader = elect(sent_at=T0)
    deadline = leader.lease.deadline
    sent_at = deadline - 0.3
    out = renewing(replace(leader, lease=replace(leader.lease, next_renew=sent_at)), sent_at)
    state, commands = renewed(out, sent_at, deadline + 0.01)
    assert sent_at + TIMING.renew_deadline > deadline + 0.01, "the renewal's own deadline is still ahead"
    assert isinstance(state, Follower)
    assert commands[0] == Announce(Demoted(token=1, reason="deadline"))
    assert isinstance(commands[1], SendRelease) and commands[1].record.token == 1
    just_in_time, _ = renewed(out, sent_at, deadline - 0.001)
    assert isinstance(just_in_time, Leader), "an answer just before the deadline keeps the tenure"


def test_a_backend_clock_step_demotes_and_releases() -> None:
    leader = elect(sent_at=T0)
    sent_at = T0 + TIMING.heartbeat
    out = renewing(leader, sent_at)
    jumped = replace(
        leader.lease.record, renewed_at=server(sent_at) + 60.0, expires_at=server(sent_at) + 65.0
    )
    state, commands = step(CONFIG, out, RenewResult(Success(jumped), sent_at, sent_at + RTT))
    assert isinstance(state, Follower) and state.inflight is None
    assert isinstance(commands[0], Warn) and "stepped forward" in commands[0].message
    assert commands[1] == Announce(Demoted(token=1, reason="clock-step"))
    assert commands[2] == SendRelease(leader.lease.record, timeout=TIMING.renew_deadline)


def test_stopping_a_leader_demotes_then_releases_then_stops() -> None:
    leader = elect(sent_at=T0)
    state, commands = step(CONFIG, leader, StopRequested(T0 + 0.5))
    assert state == Stopped()
    assert commands == (
        Announce(Demoted(token=1, reason="stopped")),
        SendRelease(leader.lease.record, timeout=TIMING.renew_deadline),
    )


def test_stopping_a_leader_with_a_renewal_out_still_releases() -> None:
    out = renewing(elect(sent_at=T0), T0 + TIMING.heartbeat)
    state, commands = step(CONFIG, out, StopRequested(T0 + 1.5))
    assert state == Stopped()
    assert [type(c) for c in commands] == [Announce, SendRelease]


def test_resigning_releases_and_sits_out_one_ttl() -> None:
    leader = elect(sent_at=T0)
    now = T0 + 0.5
    state, commands = step(CONFIG, leader, ResignRequested(now))
    assert state == Follower(next_attempt=now + TIMING.ttl, clock=leader.clock)
    assert commands == (
        Announce(Demoted(token=1, reason="resigned")),
        SendRelease(leader.lease.record, timeout=TIMING.renew_deadline),
        WaitUntil(now + TIMING.ttl),
    )


def test_a_follower_that_resigns_sits_out_one_ttl() -> None:
    later = record(holder="b", expires_at=server(T0) + 4.0)
    follower, _ = step(CONFIG, observe_at(T0), Observed(Success(Observation(later, server(T0))), T0, T0))
    assert isinstance(follower, Follower)
    state, commands = step(CONFIG, follower, ResignRequested(T0 + 0.1))
    assert state == replace(follower, next_attempt=T0 + 0.1 + TIMING.ttl)
    assert commands == (WaitUntil(T0 + 0.1 + TIMING.ttl),)


def test_stopping_a_follower_just_stops_and_a_stopped_node_ignores_everything() -> None:
    state, commands = step(CONFIG, observe_at(T0), StopRequested(T0 + 0.1))
    assert (state, commands) == (Stopped(), ())
    for fed in (
        Tick(T0 + 9),
        Notified(T0 + 9),
        Observed(Success(Observation(None, server(T0))), T0, T0 + 9),
        ClaimResult(Success(held_by_me(1, T0)), T0, T0 + 9),
        ResignRequested(T0 + 9),
        StopRequested(T0 + 9),
    ):
        assert step(CONFIG, state, fed) == (Stopped(), ()), f"a stopped node reacted to {fed}"


def test_answers_to_requests_not_sent_leave_the_state_unchanged() -> None:
    leader = elect(sent_at=T0)
    now = T0 + 0.5
    for stale in (
        Observed(Success(Observation(None, server(now))), now, now),
        ClaimResult(Success(held_by_me(9, now)), now, now),
        RenewResult(Failure(Lost(leader.lease.record)), now, now),
    ):
        state, commands = step(CONFIG, leader, stale)
        assert state == leader, f"{type(stale).__name__} changed an idle leader"
        assert commands == (WaitUntil(leader.lease.next_renew),)
    observing = observe_at(T0)
    for stale in (
        ClaimResult(Success(held_by_me(9, T0)), T0, T0 + RTT),
        RenewResult(Success(held_by_me(9, T0)), T0, T0 + RTT),
    ):
        state, commands = step(CONFIG, observing, stale)
        assert state == observing, f"{type(stale).__name__} changed an observing follower"
        assert commands == (WaitUntil(T0 + RTT + TIMING.retry),)


# ---- random input sequences ---------------------------------------------------------------

REQUESTS = (Observe, SendClaim, SendRenew)
ANSWERS: dict[type, type] = {Observe: Observed, SendClaim: ClaimResult, SendRenew: RenewResult}
INFLIGHT: dict[str, type] = {"observe": Observe, "claim": SendClaim, "renew": SendRenew}


@dataclass
class Run:
    """What a driver fed the machine and what came back, with the facts the checks need."""

    inputs: list[Input] = field(default_factory=list)
    steps: list[tuple[State, tuple[Command, ...]]] = field(default_factory=list)


def _backend_time(draw: st.DrawFn, now: float) -> float:
    """The backend's clock: ours plus an origin, usually honest, sometimes stepped."""
    if draw(st.integers(0, 19)) == 0:
        return server(now) + draw(st.sampled_from((-30.0, 30.0)))
    return server(now) + draw(st.floats(min_value=-0.001, max_value=0.001))


def _observation(draw: st.DrawFn, now: float) -> Observed:
    backend = _backend_time(draw, now)
    seen = draw(
        st.sampled_from(
            (
                None,
                record(holder="b", token=5, expires_at=backend + 0.4),
                record(holder="b", token=5, expires_at=backend + 9.0),
                record(holder="b", token=5, expires_at=backend - 1.0),
                record(holder="", token=5, expires_at=backend - 1.0),
                held_by_me(6, now - 1.0),
            )
        )
    )
    outcome = draw(
        st.sampled_from(
            (
                Success(Observation(seen, backend)),
                Success(Observation(seen, backend)),
                Success(Observation(seen, backend)),
                Failure(UNREACHABLE),
                Failure(MalformedRecord(NAME, "garbage")),
            )
        )
    )
    sent_at = now - draw(st.floats(min_value=0.0, max_value=0.5))
    return Observed(outcome, sent_at, now, notices=draw(st.booleans()))


def _answer(draw: st.DrawFn, request: Command, sent_at: float, now: float) -> Input:
    """A plausible answer to ``request``: success, a refusal, or an error."""
    backend = _backend_time(draw, now)
    match request:
        case Observe():
            return replace(_observation(draw, now), sent_at=sent_at)
        case SendClaim(claim=claim):
            won = record(holder="a", token=claim.token, acquired_at=backend, expires_at=backend + TIMING.ttl)
            options = (
                Success(won),
                Success(won),
                Success(won),
                Failure(Conflict(NAME)),
                Failure(UNREACHABLE),
            )
            return ClaimResult(draw(st.sampled_from(options)), sent_at, now)
        case SendRenew(record=mine):
            extended = replace(mine, renewed_at=backend, expires_at=backend + TIMING.ttl)
            choices = (Success(extended),) * 6 + (Failure(Lost(mine)), Failure(UNREACHABLE))
            return RenewResult(draw(st.sampled_from(choices)), sent_at, now)
    raise AssertionError(f"not a request: {request!r}")


@st.composite
def unsolicited(draw: st.DrawFn, outstanding: type | None, now: float) -> Input:
    """An answer of a kind that is not outstanding: something the machine never asked for."""
    kind = draw(st.sampled_from([kind for kind in REQUESTS if kind is not outstanding]))
    fake: Command
    if kind is Observe:
        fake = Observe(NAME, 1.0)
    elif kind is SendClaim:
        fake = SendClaim(Claim.first(NAME, ME, TIMING.ttl), 1.0)
    else:
        fake = SendRenew(held_by_me(3, now - 1.0), TIMING.ttl, 1.0)
    return _answer(draw, fake, now - 0.1, now)


#: Random runs are long; their examples get no per-example deadline, so a busy machine cannot
#: turn a slow example into a failure.
RANDOM_RUNS = settings(max_examples=300, deadline=None)
FEWER_RANDOM_RUNS = settings(max_examples=100, deadline=None)

ACTIONS = ("tick",) * 2 + ("wake",) * 3 + ("answer",) * 5 + ("stale", "notify", "resign", "stop")
#: Steps of local time between inputs: mostly well inside a heartbeat, sometimes past a deadline.
GAPS = (0.0, 0.001, 0.05, 0.125, 0.25, 0.25, 0.5, 0.5, 1.0, 2.0, 3.5, 6.0)


@st.composite
def runs(draw: st.DrawFn, *, length: int = 60) -> Run:
    """Drive the machine with a random but well-behaved environment.

    Like the runtime, the environment answers each request at most once and never answers a
    request that was not sent, and it often ticks exactly when the machine asked to be woken;
    unlike it, it answers whenever it likes, and throws in answers to requests of other kinds,
    notifications, resignations and stops.
    """
    run = Run()
    state: State = initial(T0)
    now = T0
    wake = T0
    outstanding: tuple[Command, float] | None = None
    for _ in range(length):
        if isinstance(state, Stopped):
            break
        action = draw(st.sampled_from(ACTIONS))
        now = max(now, wake) if action == "wake" else now + draw(st.sampled_from(GAPS))
        fed: Input
        if action == "answer" and outstanding is not None:
            fed = _answer(draw, outstanding[0], outstanding[1], now)
            outstanding = None
        elif action == "stale":
            fed = draw(unsolicited(None if outstanding is None else type(outstanding[0]), now))
        elif action == "notify":
            fed = Notified(now)
        elif action == "resign" and draw(st.integers(0, 1)) == 0:
            fed = ResignRequested(now)
        elif action == "stop" and draw(st.integers(0, 3)) == 0:
            fed = StopRequested(now)
        else:
            fed = Tick(now)
        state, commands = step(CONFIG, state, fed)
        run.inputs.append(fed)
        run.steps.append((state, commands))
        for command in commands:
            if isinstance(command, REQUESTS):
                outstanding = (command, now)
            elif isinstance(command, WaitUntil):
                wake = command.at
    return run


def _requests(commands: tuple[Command, ...]) -> list[Command]:
    return [c for c in commands if isinstance(c, REQUESTS)]


@RANDOM_RUNS
@given(run=runs())
def test_random_inputs_never_put_two_requests_in_flight(run: Run) -> None:
    """Also: the machine's in-flight marker always names exactly the request still unanswered,
    so it neither waits for an answer that will never come nor forgets one that will."""
    outstanding: type | None = None
    for fed, (state, commands) in zip(run.inputs, run.steps, strict=True):
        if outstanding is not None and isinstance(fed, ANSWERS[outstanding]):
            outstanding = None
        sent = _requests(commands)
        assert len(sent) <= 1, f"{fed} produced {len(sent)} requests at once: {commands}"
        if sent:
            assert outstanding is None, (
                f"{type(sent[0]).__name__} went out on {fed} while {outstanding.__name__} was unanswered"
            )
            outstanding = type(sent[0])
        if not isinstance(state, Stopped):
            marked = None if state.inflight is None else INFLIGHT[state.inflight]
            assert marked is outstanding, f"after {fed} the machine marks {marked} but {outstanding} is out"


@RANDOM_RUNS
@given(run=runs())
def test_announcements_alternate_and_match_the_state(run: Run) -> None:
    """Elected and Demoted alternate with the same token, Demoted comes before any release, and
    the state is Leader exactly while the last announcement was Elected."""
    working: int | None = None
    for fed, (state, commands) in zip(run.inputs, run.steps, strict=True):
        was_working = working
        for index, command in enumerate(commands):
            match command:
                case Announce(event=Elected(token=token)):
                    assert working is None, f"elected with token {token} while working under {working}"
                    working = token
                case Announce(event=Demoted(token=token)):
                    assert working == token, f"demoted from token {token} while working under {working}"
                    working = None
                case SendRelease() if was_working is not None:
                    assert working is None, f"released at command {index} before announcing the demotion"
                case _:
                    pass
        if isinstance(state, Leader):
            assert working == state.lease.record.token, (
                f"leader under token {state.lease.record.token} not announced"
            )
        else:
            assert working is None, f"{type(state).__name__} after {fed} but work under {working} goes on"


@RANDOM_RUNS
@given(run=runs())
def test_a_leader_never_outlives_its_deadline_and_always_asks_to_be_woken(run: Run) -> None:
    """After every step a Leader's deadline is still ahead, and at most renew_deadline after the
    send of the claim or renewal that last succeeded; every live state names a later wake-up."""
    last_success_sent = -1.0
    for fed, (state, commands) in zip(run.inputs, run.steps, strict=True):
        now = fed.now
        if isinstance(fed, ClaimResult | RenewResult) and isinstance(fed.outcome, Success):
            last_success_sent = max(last_success_sent, fed.sent_at)
        if isinstance(state, Leader):
            assert state.lease.deadline > now, f"still Leader at {now} past deadline {state.lease.deadline}"
            assert state.lease.deadline <= last_success_sent + TIMING.renew_deadline
            for renewal in (c for c in commands if isinstance(c, SendRenew)):
                assert renewal.timeout <= state.lease.deadline - now, "a renewal may outlast the deadline"
        if not isinstance(state, Stopped):
            assert commands and isinstance(commands[-1], WaitUntil), f"{fed} left no wake-up: {commands}"
            assert commands[-1].at > now, f"asked to be woken at {commands[-1].at}, not after {now}"


@RANDOM_RUNS
@given(run=runs())
def test_a_follower_never_sleeps_past_the_expiry_it_saw_nor_longer_than_retry_without_notices(
    run: Run,
) -> None:
    before: State = initial(T0)
    for fed, (state, _) in zip(run.inputs, run.steps, strict=True):
        answered = isinstance(before, Follower) and before.inflight == "observe"
        before = state
        if not (answered and isinstance(fed, Observed) and isinstance(state, Follower)):
            continue
        match fed.outcome:
            case Success(Observation(record=LockRecord() as seen, server_now=server_now)) if (
                state.inflight is None and not seen.claimable_at(server_now)
            ):
                wait = seen.expires_at - server_now
                expiry = fed.now + (wait + EXPIRY_SLACK)
                assert state.next_attempt <= expiry, f"slept past the expiry after {fed}"
                if not fed.notices:
                    assert state.next_attempt <= fed.now + TIMING.retry, f"slept past retry after {fed}"
            case _:
                pass


@FEWER_RANDOM_RUNS
@given(run=runs())
def test_the_same_inputs_give_the_same_outputs(run: Run) -> None:
    state: State = initial(T0)
    for fed, expected in zip(run.inputs, run.steps, strict=True):
        state, commands = step(CONFIG, state, fed)
        assert (state, commands) == expected, f"replaying {fed} gave a different step"


@FEWER_RANDOM_RUNS
@given(run=runs(), data=st.data())
def test_an_answer_to_a_request_never_sent_changes_nothing(run: Run, data: st.DataObject) -> None:
    """Fed at the same instant as the previous input, so that no timer can have come due."""
    if not run.steps:
        return
    state, _ = run.steps[-1]
    if isinstance(state, Stopped):
        return
    inflight = None if state.inflight is None else INFLIGHT[state.inflight]
    fed = data.draw(unsolicited(inflight, run.inputs[-1].now))
    after, _ = step(CONFIG, state, fed)
    assert after == state, f"{fed} changed {state} into {after}"
