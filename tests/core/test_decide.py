"""Pure lock decisions, and the model store's statements they are planned against."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from returns.result import Failure, Success

from gomaster.core.decide import (
    EXPIRY_SLACK,
    RENEW_RETRIES_PER_HEARTBEAT,
    Claim,
    Held,
    Lease,
    follower_wake,
    local_deadline,
    plan_acquire,
    start_lease,
)
from gomaster.core.errors import Conflict, Lost
from gomaster.core.model import claim_in, release_in, renew_in
from gomaster.core.record import LockRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing
from tests.core.strategies import NAME, NODE_IDS, identities, identity, observations, record, records, timings

TIMING = Timing()


# ---- plan_acquire --------------------------------------------------------------------------


@given(seen=records(), me=identities(), now=st.floats(min_value=0, max_value=3e9))
def test_never_claims_a_live_lease_of_another_node(seen: LockRecord, me: NodeIdentity, now: float) -> None:
    assume(seen.holder not in ("", me.node_id) and now < seen.expires_at)
    outcome = plan_acquire(Observation(seen, now), NAME, me, TIMING)
    assert not isinstance(outcome, Success), f"{me.node_id} planned to take {seen.holder}'s live lease"


@given(seen=records(), now=st.floats(min_value=0, max_value=3e9))
def test_never_claims_its_own_live_lease_either(seen: LockRecord, now: float) -> None:
    assume(seen.holder != "" and now < seen.expires_at)
    outcome = plan_acquire(Observation(seen, now), NAME, identity(seen.holder), TIMING)
    assert isinstance(outcome, Failure), "a node must wait out a lease it lost track of"


@given(seen=observations(), me=identities(), timing=timings())
def test_a_claim_takes_the_observed_token_plus_one_and_expects_the_observed_row(
    seen: Observation, me: NodeIdentity, timing: Timing
) -> None:
    match plan_acquire(seen, NAME, me, timing):
        case Success(claim):
            old = 0 if seen.record is None else seen.record.token
            assert claim.token == old + 1
            assert claim.expected == seen.record, "the compare-and-set must expect exactly what was seen"
            assert (claim.name, claim.node, claim.ttl) == (NAME, me, timing.ttl)
        case Failure(held):
            assert seen.record is not None and seen.record.expires_at > seen.server_now, (
                f"refused to claim {seen.record} although it expired by {seen.server_now}"
            )
            assert held.record == seen.record
            assert held.wait == seen.record.expires_at - seen.server_now > 0


def test_the_first_claim_creates_the_record_with_token_one() -> None:
    claim = plan_acquire(Observation(None, 1_000.0), NAME, identity(), TIMING).unwrap()
    assert claim == Claim(name=NAME, node=identity(), token=1, expected=None, ttl=TIMING.ttl)


@pytest.mark.parametrize(
    ("holder", "expires_at"),
    [("", 1_000.0), ("", 998.0), ("b", 1_000.0), ("b", 999.0), ("a", 999.0)],
    ids=str,
)
def test_released_or_expired_lease_is_claimed_with_the_next_token(holder: str, expires_at: float) -> None:
    seen = record(holder=holder, token=41, expires_at=expires_at)
    claim = plan_acquire(Observation(seen, 1_000.0), NAME, identity("a"), TIMING).unwrap()
    assert (claim.token, claim.expected) == (42, seen)


def test_a_revoked_lease_is_claimed_only_once_its_expiry_has_passed() -> None:
    """An operator's revoke clears the holder but keeps the expiry: the old holder may still be
    working until its own deadline, so nobody claims before the lease runs out."""
    revoked = record(holder="", token=41, expires_at=1_002.0)
    assert plan_acquire(Observation(revoked, 1_000.0), NAME, identity("a"), TIMING) == Failure(
        Held(revoked, wait=2.0)
    )
    assert plan_acquire(Observation(revoked, 1_002.0), NAME, identity("a"), TIMING).unwrap().token == 42


def test_a_live_lease_says_how_long_it_has_left() -> None:
    seen = record(holder="b", expires_at=1_003.5)
    outcome = plan_acquire(Observation(seen, 1_000.0), NAME, identity("a"), TIMING)
    assert outcome == Failure(Held(seen, wait=3.5))


# ---- when followers wake, and the leader's own bookkeeping ---------------------------------


@given(
    wait=st.floats(min_value=1e-6, max_value=1e5),
    received_at=st.floats(min_value=0, max_value=1e6),
    timing=timings(),
)
def test_a_follower_wakes_at_the_observed_expiry_or_after_retry_whichever_is_first(
    wait: float, received_at: float, timing: Timing
) -> None:
    wake = follower_wake(Held(record(), wait=wait), received_at, timing)
    assert wake == received_at + min(wait + EXPIRY_SLACK, timing.retry)
    assert wake <= received_at + timing.retry, "a follower must never sleep longer than retry"


@given(
    wait=st.floats(min_value=1e-6, max_value=1e5),
    received_at=st.floats(min_value=0, max_value=1e6),
    timing=timings(),
)
def test_with_notices_a_follower_sleeps_until_retry_before_the_expiry_it_saw(
    wait: float, received_at: float, timing: Timing
) -> None:
    wake = follower_wake(Held(record(), wait=wait), received_at, timing, notices=True)
    assert wake <= received_at + (wait + EXPIRY_SLACK), "a follower slept past the expiry it saw"
    polled = follower_wake(Held(record(), wait=wait), received_at, timing)
    assert wake >= polled, "notices made a follower look more often than polling"
    if wait + EXPIRY_SLACK >= 2 * timing.retry:
        assert wake == received_at + (wait + EXPIRY_SLACK - timing.retry)
    else:
        assert wake == polled, "a lease ending within two retries is watched as without notices"


def test_with_notices_a_lease_of_ttl_is_looked_at_once_per_ttl_less_retry() -> None:
    assert follower_wake(Held(record(), wait=TIMING.ttl), 10.0, TIMING, notices=True) == 10.0 + (
        TIMING.ttl + EXPIRY_SLACK - TIMING.retry
    )
    assert follower_wake(Held(record(), wait=TIMING.ttl), 10.0, TIMING) == 10.0 + TIMING.retry


def test_the_local_deadline_counts_from_the_send() -> None:
    assert local_deadline(100.0, TIMING) == 100.0 + TIMING.renew_deadline


def test_a_new_lease_renews_after_a_heartbeat_and_ends_at_the_renew_deadline() -> None:
    lease = start_lease(record(holder="a"), sent_at=100.0, timing=TIMING)
    assert lease == Lease(record=record(holder="a"), deadline=103.0, next_renew=101.0)


@given(
    deadline=st.floats(min_value=0, max_value=1e6),
    sent_at=st.floats(min_value=0, max_value=1e6),
    timing=timings(),
)
def test_a_renewal_never_moves_the_deadline_back(deadline: float, sent_at: float, timing: Timing) -> None:
    lease = Lease(record=record(holder="a"), deadline=deadline, next_renew=deadline)
    renewed = lease.renewed(record(holder="a", renewed_at=5.0), sent_at, timing)
    assert renewed.deadline == max(deadline, sent_at + timing.renew_deadline)
    assert renewed.next_renew == sent_at + timing.heartbeat
    assert renewed.record.renewed_at == 5.0


def test_a_failed_renewal_retries_within_the_heartbeat_and_keeps_the_deadline() -> None:
    lease = Lease(record=record(holder="a"), deadline=103.0, next_renew=101.0)
    again = lease.retry_soon(101.2, TIMING)
    assert again == replace(lease, next_renew=101.2 + TIMING.heartbeat / RENEW_RETRIES_PER_HEARTBEAT)


# ---- the model store -----------------------------------------------------------------------


def claim_for(me: str, seen: Observation) -> Claim:
    return plan_acquire(seen, NAME, identity(me), TIMING).unwrap()


def test_release_keeps_the_token_and_the_next_claim_gets_token_plus_one() -> None:
    table: dict[str, LockRecord] = {}
    first = claim_in(table, claim_for("a", Observation(None, 10.0)), 10.0).unwrap()
    table[NAME] = first
    released = release_in(table, first, 11.0)
    assert released is not None
    assert (released.holder, released.token, released.expires_at) == ("", 1, 11.0)
    table[NAME] = released
    second = claim_in(table, claim_for("b", Observation(released, 11.5)), 11.5).unwrap()
    assert second.token == 2, "a release must never reset the fencing token"


def test_only_one_of_two_claims_on_the_same_observation_wins() -> None:
    table: dict[str, LockRecord] = {NAME: record(holder="c", token=7, expires_at=5.0)}
    seen = Observation(table[NAME], 6.0)
    winner = claim_in(table, claim_for("a", seen), 6.1)
    assert isinstance(winner, Success)
    table[NAME] = winner.unwrap()
    assert claim_in(table, claim_for("b", seen), 6.2) == Failure(Conflict(NAME))


def test_renewal_fails_as_lost_once_expired_released_or_taken() -> None:
    mine = record(holder="a", token=3, renewed_at=10.0, expires_at=15.0)
    assert renew_in({NAME: mine}, mine, 5.0, 14.0) == Success(replace(mine, renewed_at=14.0, expires_at=19.0))
    assert renew_in({NAME: mine}, mine, 5.0, 15.0) == Failure(Lost(mine)), "renewed an expired lease"
    released = replace(mine, holder="")
    assert renew_in({NAME: released}, mine, 5.0, 12.0) == Failure(Lost(mine)), "renewed a released lease"
    taken = replace(mine, holder="b", token=4)
    assert renew_in({NAME: taken}, mine, 5.0, 16.0) == Failure(Lost(mine)), "renewed someone else's lease"


def test_release_of_a_lease_that_is_no_longer_ours_changes_nothing() -> None:
    mine = record(holder="a", token=3)
    assert release_in({NAME: replace(mine, holder="b", token=4)}, mine, 12.0) is None
    assert release_in({NAME: replace(mine, holder="")}, mine, 12.0) is None
    assert release_in({}, mine, 12.0) is None


Operation = tuple[str, int, float]
operations = st.lists(
    st.tuples(
        st.sampled_from(("observe", "claim", "renew", "release", "wait")),
        st.integers(min_value=0, max_value=len(NODE_IDS) - 1),
        st.floats(min_value=0.0, max_value=8.0),
    ),
    max_size=60,
)


@given(script=operations)
def test_tokens_strictly_increase_over_any_history_on_the_model_store(script: list[Operation]) -> None:
    """Nodes observe, claim from what they saw (however stale), renew, release and wait out
    expiries in any order; every successful claim's token beats all earlier ones and is the
    stored token plus one, and the stored token never goes down."""
    table: dict[str, LockRecord] = {}
    now = 1_000.0
    seen: dict[str, Observation] = {}
    held: dict[str, LockRecord] = {}
    claimed: list[int] = []
    for action, who, amount in script:
        me = NODE_IDS[who]
        before = table.get(NAME)
        stored = 0 if before is None else before.token
        match action:
            case "observe":
                seen[me] = Observation(table.get(NAME), now)
            case "claim" if me in seen:
                plan = plan_acquire(seen[me], NAME, identity(me), TIMING)
                if isinstance(plan, Success):
                    outcome = claim_in(table, plan.unwrap(), now)
                    if isinstance(outcome, Success):
                        got = outcome.unwrap()
                        assert got.token == stored + 1, f"claimed token {got.token} over stored {stored}"
                        assert all(got.token > earlier for earlier in claimed)
                        claimed.append(got.token)
                        table[NAME] = held[me] = got
            case "renew" if me in held:
                renewed = renew_in(table, held[me], TIMING.ttl, now)
                if isinstance(renewed, Success):
                    table[NAME] = held[me] = renewed.unwrap()
            case "release" if me in held:
                released = release_in(table, held.pop(me), now)
                if released is not None:
                    table[NAME] = released
            case "wait":
                now += amount
            case _:
                pass
        after = table.get(NAME)
        if before is not None:
            assert after is not None and after.token >= before.token, f"{action} lowered the token"
