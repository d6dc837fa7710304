"""The backend contract: every backend, same tests, real stores."""

from __future__ import annotations

import pickle
import threading
import time
from typing import Any

import multiprocess
import pytest
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect, force_release
from gomaster.core.decide import Claim, Held, plan_acquire
from gomaster.core.errors import Conflict, Lost
from gomaster.core.record import LockRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing
from tests.backends.conftest import BackendCase
from tests.helpers import err, identity, ok, result

TIMEOUT = 5.0
TTL = 5.0
SHORT_TTL = 0.4
RACERS = 16
ROUNDS = 50


def _acquire(backend: LockBackend, name: str, me: NodeIdentity, ttl: float = TTL) -> LockRecord:
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, me, Timing.from_ttl(ttl) if ttl >= 0.5 else _short())
    assert isinstance(planned, Success), f"lock {name} unexpectedly held: {planned}"
    claim = planned.unwrap()
    return ok(
        backend.claim(
            Claim(name=claim.name, node=me, token=claim.token, expected=claim.expected, ttl=ttl), TIMEOUT
        )
    )


def _short() -> Timing:
    return Timing(ttl=SHORT_TTL, heartbeat=0.05, renew_deadline=0.2, retry=0.05, grace=0.1)


def test_first_claim_creates_the_record_with_token_one(backend: LockBackend, lock_name: str) -> None:
    me = identity("1.2.3")
    record = _acquire(backend, lock_name, me)
    assert (record.name, record.holder, record.token, record.version) == (lock_name, me.node_id, 1, "1.2.3")
    assert (record.host, record.pid) == (me.host, me.pid)
    assert record.acquired_at == record.renewed_at
    assert record.expires_at == pytest.approx(record.acquired_at + TTL, abs=0.002)
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record == record


def test_observe_of_an_unknown_name_gives_no_record_and_the_server_clock(
    backend: LockBackend, lock_name: str
) -> None:
    before = time.time()
    seen = ok(backend.observe(lock_name, TIMEOUT))
    after = time.time()
    assert seen.record is None
    # One machine: the backend's clock agrees with ours to well within a second.
    assert before - 1 <= seen.server_now <= after + 1


def test_a_live_lease_is_held_with_the_time_it_has_left(backend: LockBackend, lock_name: str) -> None:
    _acquire(backend, lock_name, identity())
    seen = ok(backend.observe(lock_name, TIMEOUT))
    planned = plan_acquire(seen, lock_name, identity(), Timing())
    assert isinstance(planned, Failure)
    held = planned.failure()
    assert isinstance(held, Held)
    assert 0 < held.wait <= TTL
    assert held.wait == pytest.approx(TTL, abs=1.0)


def test_second_insert_of_a_new_name_conflicts(backend: LockBackend, lock_name: str) -> None:
    _acquire(backend, lock_name, identity())
    again = Claim.first(lock_name, identity(), TTL)
    assert isinstance(err(backend.claim(again, TIMEOUT)), Conflict)


def test_claim_after_expiry_by_the_server_clock_takes_the_next_token(
    backend: LockBackend, lock_name: str
) -> None:
    first = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)
    second = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    assert second.token == first.token + 1
    assert second.acquired_at >= first.expires_at


def test_claim_against_a_stale_observation_conflicts(backend: LockBackend, lock_name: str) -> None:
    first = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)
    stale = Claim.after(first, identity(), TTL)
    _acquire(backend, lock_name, identity())
    assert isinstance(err(backend.claim(stale, TIMEOUT)), Conflict)


def test_claim_of_a_live_lease_is_refused_by_the_store_itself(backend: LockBackend, lock_name: str) -> None:
    live = _acquire(backend, lock_name, identity())
    # Bypass plan_acquire: the statement's own expiry check must refuse it.
    forced = Claim.after(live, identity(), TTL)
    assert isinstance(err(backend.claim(forced, TIMEOUT)), Conflict)


def test_renew_extends_the_lease_by_the_server_clock(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    time.sleep(0.05)
    renewed = ok(backend.renew(record, TTL, TIMEOUT))
    assert (renewed.token, renewed.holder, renewed.acquired_at) == (
        record.token,
        record.holder,
        record.acquired_at,
    )
    assert renewed.renewed_at > record.renewed_at
    assert renewed.expires_at == pytest.approx(renewed.renewed_at + TTL, abs=0.002)


def test_renew_after_expiry_is_lost(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)
    assert isinstance(err(backend.renew(record, TTL, TIMEOUT)), Lost)


def test_renew_after_another_node_took_over_is_lost(backend: LockBackend, lock_name: str) -> None:
    mine = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)
    _acquire(backend, lock_name, identity())
    assert isinstance(err(backend.renew(mine, TTL, TIMEOUT)), Lost)


def test_released_lock_keeps_its_token(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    assert ok(backend.release(record, TIMEOUT)) is True
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record is not None
    assert seen.record.released
    assert seen.record.token == record.token
    assert seen.record.expires_at <= seen.server_now
    after = _acquire(backend, lock_name, identity())
    assert after.token == record.token + 1


def test_release_of_a_lease_no_longer_ours_changes_nothing(backend: LockBackend, lock_name: str) -> None:
    mine = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    time.sleep(SHORT_TTL + 0.1)
    theirs = _acquire(backend, lock_name, identity())
    assert ok(backend.release(mine, TIMEOUT)) is False
    assert ok(backend.observe(lock_name, TIMEOUT)).record == theirs


def test_renew_after_a_release_is_lost(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    ok(backend.release(record, TIMEOUT))
    assert isinstance(err(backend.renew(record, TTL, TIMEOUT)), Lost)


def test_force_release_takes_the_lease_from_its_holder_but_nobody_claims_before_expiry(
    backend: LockBackend, lock_name: str
) -> None:
    record = _acquire(backend, lock_name, identity(), ttl=SHORT_TTL)
    assert ok(force_release(backend, lock_name, TIMEOUT)) == record
    assert isinstance(err(backend.renew(record, TTL, TIMEOUT)), Lost)
    assert ok(force_release(backend, lock_name, TIMEOUT)) is None
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record is not None and seen.record.released and seen.record.token == record.token
    # The holder may still be working until its own deadline: the expiry is kept.
    early = plan_acquire(seen, lock_name, identity(), _short())
    assert isinstance(early, Failure)
    forced = Claim.after(seen.record, identity(), TTL)
    if seen.server_now < record.expires_at - 0.05:
        assert isinstance(err(backend.claim(forced, TIMEOUT)), Conflict)
    time.sleep(SHORT_TTL + 0.1)
    assert _acquire(backend, lock_name, identity()).token == record.token + 1


def test_repair_releases_the_lease_keeps_the_token_and_lets_nobody_claim_during_the_hold(
    backend: LockBackend, lock_name: str
) -> None:
    hold = 2.0
    assert ok(backend.repair(lock_name, hold, 0, TIMEOUT)) is None  # no record: nothing written
    assert ok(backend.observe(lock_name, TIMEOUT)).record is None
    record = _acquire(backend, lock_name, identity())
    assert ok(backend.repair(lock_name, hold, 0, TIMEOUT)) == record.token
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert seen.record is not None and seen.record.released and seen.record.token == record.token
    assert hold - 0.5 < seen.record.expires_at - seen.server_now <= hold
    assert isinstance(err(backend.renew(record, TTL, TIMEOUT)), Lost)  # the old holder demotes
    assert isinstance(err(backend.claim(Claim.after(seen.record, identity(), TTL), TIMEOUT)), Conflict)
    # A floor raises the token, and a hold of 0 makes the lock claimable at once, counting on.
    raised = record.token + 10
    assert ok(backend.repair(lock_name, 0.0, raised, TIMEOUT)) == raised
    assert _acquire(backend, lock_name, identity()).token == raised + 1
    # A floor below the stored token never lowers it.
    assert ok(backend.repair(lock_name, 0.0, 1, TIMEOUT)) == raised + 1


def test_names_lists_every_lock(backend: LockBackend, lock_name: str) -> None:
    for suffix in ("a", "b"):
        _acquire(backend, f"{lock_name}-{suffix}", identity())
    names = ok(backend.names(TIMEOUT))
    assert {f"{lock_name}-a", f"{lock_name}-b"} <= set(names)


def test_lock_names_with_odd_characters_are_stored_as_given(backend: LockBackend, lock_name: str) -> None:
    odd = f"{lock_name} 'quoted'; DROP TABLE x; -- ünïcode/€"
    record = _acquire(backend, odd, identity())
    assert ok(backend.observe(odd, TIMEOUT)).record == record


def test_backend_objects_are_picklable_configuration(case: BackendCase, lock_name: str) -> None:
    if not case.picklable:
        with pytest.raises(TypeError, match="sqlite"):
            pickle.dumps(case.make())
        return
    original = case.make()
    _acquire(original, lock_name, identity())
    copy: LockBackend = pickle.loads(pickle.dumps(original))
    assert copy.url == original.url
    assert ok(copy.observe(lock_name, TIMEOUT)).record is not None


def _race_round(backend: LockBackend, name: str, barrier: Any) -> LockRecord | None:
    me = identity()
    barrier.wait()
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, me, Timing())
    if isinstance(planned, Failure):
        return None
    outcome = result(backend.claim(planned.unwrap(), TIMEOUT))
    if isinstance(outcome, Success):
        record: LockRecord = outcome.unwrap()
        return record
    assert isinstance(outcome.failure(), Conflict), outcome.failure()
    return None


def _check_rounds(winners_by_round: list[list[LockRecord]]) -> None:
    for number, winners in enumerate(winners_by_round):
        assert len(winners) == 1, f"round {number}: {len(winners)} winners"
        assert winners[0].token == number + 1, f"round {number}: token {winners[0].token}"


def test_sixteen_threads_racing_for_a_free_lock_have_exactly_one_winner(
    case: BackendCase, lock_name: str
) -> None:
    backends = [case.make() for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    rounds: list[list[LockRecord]] = []
    for _ in range(ROUNDS):
        found: list[LockRecord | None] = [None] * RACERS

        def race(i: int, found: list[LockRecord | None] = found) -> None:
            found[i] = _race_round(backends[i], lock_name, barrier)

        threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        winners = [w for w in found if w is not None]
        rounds.append(winners)
        for winner in winners:
            ok(backends[0].release(winner, TIMEOUT))
    for made in backends:
        made.close()
    _check_rounds(rounds)


def _process_racer(url: str, name: str, barrier: Any, done: Any, results: Any, rounds: int) -> None:
    backend = connect(url)
    for number in range(rounds):
        winner = _race_round(backend, name, barrier)
        done.wait()  # everyone has tried before the winner frees the lock for the next round
        if winner is not None:
            results.put((number, winner))
            ok(backend.release(winner, TIMEOUT))
    backend.close()


def test_sixteen_processes_racing_for_a_free_lock_have_exactly_one_winner(
    shared_case: BackendCase, lock_name: str
) -> None:
    case = shared_case
    assert case.url is not None
    context = multiprocess.get_context("spawn")
    barrier = context.Barrier(RACERS, timeout=60)
    done = context.Barrier(RACERS, timeout=60)
    results = context.Queue()
    racers = [
        context.Process(target=_process_racer, args=(case.url, lock_name, barrier, done, results, ROUNDS))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    rounds: list[list[LockRecord]] = [[] for _ in range(ROUNDS)]
    for racer in racers:
        racer.join(120)
    while not results.empty():
        number, winner = results.get(timeout=5)
        rounds[number].append(winner)
    assert all(racer.exitcode == 0 for racer in racers), [r.exitcode for r in racers]
    _check_rounds(rounds)


def test_wait_for_release_wakes_on_a_release_where_the_backend_notifies(
    backend: LockBackend, lock_name: str
) -> None:
    if not backend.notifies:
        started = time.monotonic()
        assert ok(backend.wait_for_release(lock_name, 0.2)) is False
        assert time.monotonic() - started < 1.0
        return
    record = _acquire(backend, lock_name, identity())
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(ok(backend.wait_for_release(lock_name, 5.0))))
    waiter.start()
    time.sleep(0.1)
    ok(backend.release(record, TIMEOUT))
    waiter.join(5)
    assert woke == [True]


def test_observation_records_equal_what_claims_returned(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert isinstance(seen, Observation)
    assert seen.record == record
    assert seen.server_now >= record.acquired_at
