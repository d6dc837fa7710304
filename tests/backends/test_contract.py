"""The backend contract: every backend, same tests, real stores."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import multiprocess
import pytest
from returns.io import IOResult
from returns.result import Failure, Success

from bench.proxy import CountingProxy
from gomaster.backends import LockBackend, connect, force_release, parse_backend
from gomaster.backends.memory import MemoryBackend
from gomaster.core.decide import Claim, Held, plan_acquire
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import LockRecord, MalformedRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing
from tests.backends.conftest import BackendCase, case_of
from tests.backends.traits import (
    KEY_SECRET,
    QUOTED,
    SECRET,
    TRAITS,
    Corruption,
    Refusal,
    Table,
    param,
    parts,
    with_query,
)
from tests.helpers import err, free_port, identity, ok, result, waiter
from tests.servers.base import ThrowawayServer

TIMEOUT = 5.0
TTL = 5.0
SHORT_TTL = 0.4
RACERS = 16
ROUNDS = 50
#: Long enough to outlive a freeze.
LONG_TTL = 60.0
#: What a step against a hung or stopped server gets, and how far past it the step may return.
SHORT_TIMEOUT = 0.5
SLACK = 0.5
#: What a step against a server that cannot be reached gets.
UNREACHABLE_TIMEOUT = 1.0
#: A host no resolver knows (``.invalid`` is reserved for that), on any port.
UNKNOWN_HOST = ("no-such-host.invalid", 9)
#: How soon after a release a waiter on another backend must have woken.
NOTIFY_WITHIN = 0.1
#: Long enough for a first ``wait_for_release`` to connect its listener.
LISTEN_SETUP = 0.2
#: A wait that ``close()`` interrupts; ``close()`` itself must return sooner.
CLOSE_WAIT = 0.6

T = TypeVar("T")


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
    """A used backend (connected, and listening where it notifies) pickles as its settings alone;
    the copy reaches the same store with connections of its own."""
    if not case.picklable:
        with pytest.raises(TypeError, match="sqlite"):
            pickle.dumps(case.make())
        return
    original = case.make()
    record = _acquire(original, lock_name, identity())
    if original.notifies:
        _listen(original, lock_name)
    copy: LockBackend = pickle.loads(pickle.dumps(original))
    assert copy.url == original.url
    assert ok(copy.observe(lock_name, TIMEOUT)).record == record
    copy.close()
    original.close()


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
    case: BackendCase, lock_name: str
) -> None:
    """A waiter on another backend object wakes within ``NOTIFY_WITHIN`` of the release; a
    backend without notices answers False at once, so the elector polls."""
    holder, follower = case.make(), case.make()
    if not follower.notifies:
        started = time.monotonic()
        assert ok(follower.wait_for_release(lock_name, 0.2)) is False
        assert time.monotonic() - started < 1.0
        return
    record = _acquire(holder, lock_name, identity())
    _listen(follower, lock_name)
    thread, outcome = waiter(follower, lock_name, TIMEOUT)
    time.sleep(0.1)
    released = time.monotonic()
    assert ok(holder.release(record, TIMEOUT)) is True
    thread.join(TIMEOUT)
    assert outcome[0] is True
    assert outcome[1] - released < NOTIFY_WITHIN, f"woke {outcome[1] - released:.3f} s after the release"
    for made in (holder, follower):
        made.close()


def test_observation_records_equal_what_claims_returned(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    seen = ok(backend.observe(lock_name, TIMEOUT))
    assert isinstance(seen, Observation)
    assert seen.record == record
    assert seen.server_now >= record.acquired_at


# -- helpers for what follows -------------------------------------------------------------------


def _listen(backend: LockBackend, name: str) -> None:
    """Have ``backend`` set up its listener for ``name`` (nothing is released meanwhile)."""
    assert ok(backend.wait_for_release(name, LISTEN_SETUP)) is False


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    """How long ``call`` took, and what it returned."""
    started = time.monotonic()
    value = call()
    return time.monotonic() - started, value


def _failed_in_time(step: str, call: Callable[[], IOResult[Any, Any]], timeout: float) -> BackendError:
    """The BackendError of a step that must fail within ``timeout`` plus ``SLACK``."""
    elapsed, outcome = _timed(lambda: result(call()))
    assert elapsed < timeout + SLACK, f"{step} took {elapsed:.2f} s"
    assert isinstance(outcome, Failure), f"{step}: {outcome}"
    error = outcome.failure()
    assert isinstance(error, BackendError), f"{step}: {error!r}"
    return error


def _says_it_timed_out(error: BackendError, timeout: float) -> None:
    """The message says the step ran out of time, and how much it had."""
    assert "within" in error.message and f"{timeout:g}" in error.message, error.message


def _exit_code(child: int, timeout: float) -> int:
    """The forked child's exit code; one still running after ``timeout`` is killed and fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    raise AssertionError(f"forked child {child} did not finish within {timeout} s")


# -- servers that hang, restart, cannot be reached, or want a password --------------------------


def test_a_frozen_server_fails_every_step_in_time_and_serves_again_when_thawed(
    server_case: BackendCase, private: tuple[ThrowawayServer, str]
) -> None:
    server, url = private
    made, other = connect(url), connect(url)
    record = _acquire(made, "frozen", identity(), ttl=LONG_TTL)  # outlives the freeze
    # A step that times out may still happen once the server runs again: release another lock.
    spare = _acquire(made, "frozen-spare", identity())
    if other.notifies:
        _listen(other, "frozen")
    server.freeze()
    try:
        failures = [
            # On the open connection: the statement is sent, the answer never comes.
            _failed_in_time("observe", lambda: made.observe("frozen", SHORT_TIMEOUT), SHORT_TIMEOUT),
            # Then on the connection kept for a late answer, or on a new one whose greeting never comes.
            _failed_in_time("renew", lambda: made.renew(record, LONG_TTL, SHORT_TIMEOUT), SHORT_TIMEOUT),
            _failed_in_time(
                "claim",
                lambda: made.claim(Claim.first("frozen-new", identity(), TTL), SHORT_TIMEOUT),
                SHORT_TIMEOUT,
            ),
            _failed_in_time("release", lambda: made.release(spare, SHORT_TIMEOUT), SHORT_TIMEOUT),
            _failed_in_time("names", lambda: made.names(SHORT_TIMEOUT), SHORT_TIMEOUT),
        ]
        _says_it_timed_out(failures[0], SHORT_TIMEOUT)
        for error in failures:
            assert "within" in error.message, error.message
        # A second thread waiting for the busy connection gives up in time as well.
        waiting = threading.Thread(target=lambda: made.observe("frozen", 2.0))
        waiting.start()
        time.sleep(0.1)
        _failed_in_time("observe behind a busy call", lambda: made.observe("frozen", 0.3), 0.3)
        waiting.join(5)
        if other.notifies:
            # An idle listener just hears nothing; a new one cannot connect.
            elapsed, woken = _timed(lambda: ok(other.wait_for_release("frozen", SHORT_TIMEOUT)))
            assert woken is False
            assert elapsed < SHORT_TIMEOUT + SLACK
            fresh = connect(url)
            _failed_in_time(
                "a new listener", lambda: fresh.wait_for_release("frozen", SHORT_TIMEOUT), SHORT_TIMEOUT
            )
    finally:
        server.thaw()
    renewed = ok(made.renew(record, LONG_TTL, TIMEOUT))
    assert renewed.token == record.token
    assert renewed.renewed_at > record.renewed_at
    assert ok(made.observe("frozen", TIMEOUT)).record == renewed
    if other.notifies:
        ok(made.release(renewed, TIMEOUT))
        assert ok(other.wait_for_release("frozen", TIMEOUT)) is True
    for each in (made, other):
        each.close()


def test_a_restarted_server_is_used_again_by_the_next_call(
    server_case: BackendCase, private: tuple[ThrowawayServer, str]
) -> None:
    server, url = private
    made, listener = connect(url), connect(url)
    record = _acquire(made, "restart", identity())
    if listener.notifies:
        _listen(listener, "restart")
    server.restart()
    # The first call after the restart already works: the dead connection is noticed before use.
    assert ok(made.observe("restart", TIMEOUT)).record == record
    if listener.notifies:
        # The listener reconnects within the same call and hears the next release.
        thread, outcome = waiter(listener, "restart", TIMEOUT)
        time.sleep(0.2)
        ok(made.release(record, TIMEOUT))
        thread.join(TIMEOUT)
        assert outcome[0] is True
        record = _acquire(made, "restart", identity())
    server.stop()
    _failed_in_time("renew", lambda: made.renew(record, TTL, SHORT_TIMEOUT), SHORT_TIMEOUT)
    if listener.notifies:
        _failed_in_time(
            "wait_for_release", lambda: listener.wait_for_release("restart", SHORT_TIMEOUT), SHORT_TIMEOUT
        )
    server.start()
    assert ok(made.renew(record, TTL, TIMEOUT)).token == record.token
    for each in (made, listener):
        each.close()


@pytest.mark.parametrize(
    ("where", "cause"),
    [("closed port", "refused"), ("unknown host", "resolve|not known")],
    ids=["closed port", "unknown host"],
)
def test_an_unreachable_server_fails_within_the_timeout_naming_it_and_never_its_password(
    server_case: BackendCase, where: str, cause: str
) -> None:
    host, port = ("127.0.0.1", free_port()) if where == "closed port" else UNKNOWN_HOST
    address = server_case.traits.address(host, port)
    made, keyworded = connect(address), server_case.traits.keywords(address)
    error = _failed_in_time("observe", lambda: made.observe("x", UNREACHABLE_TIMEOUT), UNREACHABLE_TIMEOUT)
    assert host in error.message, error.message
    assert re.search(cause, error.message, re.IGNORECASE), error.message
    if made.notifies:
        waited = _failed_in_time(
            "wait", lambda: made.wait_for_release("x", UNREACHABLE_TIMEOUT), UNREACHABLE_TIMEOUT
        )
        assert host in waited.message, waited.message
        error = waited
    for shown in (made.url, repr(made), keyworded.url, repr(keyworded), str(error), repr(error)):
        for secret in (SECRET, QUOTED, KEY_SECRET):
            assert secret not in shown, shown
    assert "alice:***@" in made.url and "alice:***@" in keyworded.url
    made.close()


def test_the_password_never_shows_and_a_wrong_or_missing_one_is_named(
    server_case: BackendCase, lock_name: str
) -> None:
    assert server_case.url is not None
    with server_case.traits.secured(server_case.url, f"t_{lock_name[5:]}") as (right_url, wrong_url, no_url):
        right, wrong, anonymous = connect(right_url), connect(wrong_url), connect(no_url)
        record = _acquire(right, lock_name, identity())
        copy: LockBackend = pickle.loads(pickle.dumps(right))
        keyworded = server_case.traits.keywords(right_url)
        for same in (copy, keyworded):
            assert ok(same.observe(lock_name, TIMEOUT)).record == record
        errors = [err(wrong.observe(lock_name, TIMEOUT)), err(anonymous.observe(lock_name, TIMEOUT))]
        server = parts(right_url)
        for error in errors:
            assert isinstance(error, BackendError), error
            assert f"{server.host}:{server.port}" in str(error), error
            assert re.search("password|authenticat", error.message, re.IGNORECASE), error.message
        shown = [
            right.url,
            repr(right),
            wrong.url,
            repr(wrong),
            copy.url,
            repr(copy),
            keyworded.url,
            repr(keyworded),
        ]
        shown += [str(errors[0]), repr(errors[0])]
        for text in shown:
            assert SECRET not in text and QUOTED not in text, text
            assert "***" in text, text
        assert f"{server.host}:{server.port}{server.path}" in right.url, "the URL still says where it points"
        for each in (right, wrong, anonymous, copy, keyworded):
            each.close()


def test_each_step_is_one_round_trip(server_case: BackendCase, lock_name: str) -> None:
    """Counted on the wire by the benchmarks' relay: one each time the client speaks after the
    server did, on the busiest connection (a driver's monitor may have others)."""
    assert server_case.url is not None
    url = server_case.traits.apart(server_case.url, f"t_{lock_name[5:]}")
    server = parts(url)
    with CountingProxy(server.port or 0, server.host or "127.0.0.1") as proxy:
        made = connect(server_case.traits.through(url, proxy.port))
        warm = _acquire(made, "warm-up", identity())  # connect, set up, load scripts
        ok(made.revoke(ok(made.renew(warm, TTL, TIMEOUT)), TIMEOUT))
        ok(made.release(warm, TIMEOUT))
        ok(made.names(TIMEOUT))

        def trips(step: Callable[[], object]) -> int:
            before = proxy.turns()
            step()
            after = proxy.turns()
            before += [0] * (len(after) - len(before))
            return max(b - a for a, b in zip(before, after, strict=True))

        seen: list[Observation] = []
        assert trips(lambda: seen.append(ok(made.observe(lock_name, TIMEOUT)))) == 1
        claim = plan_acquire(seen[0], lock_name, identity(), Timing()).unwrap()
        records: list[LockRecord] = []
        assert trips(lambda: records.append(ok(made.claim(claim, TIMEOUT)))) == 1
        assert trips(lambda: records.append(ok(made.renew(records[-1], TTL, TIMEOUT)))) == 1
        assert trips(lambda: ok(made.release(records[-1], TIMEOUT))) == 1
        again = Claim.after(ok(made.observe(lock_name, TIMEOUT)).record or records[-1], identity(), TTL)
        assert trips(lambda: records.append(ok(made.claim(again, TIMEOUT)))) == 1
        assert trips(lambda: ok(made.revoke(records[-1], TIMEOUT))) == 1
        assert trips(lambda: ok(made.names(TIMEOUT))) == 1
        made.close()


# -- processes ----------------------------------------------------------------------------------


def test_a_forked_child_uses_its_own_connections(shared_case: BackendCase, lock_name: str) -> None:
    made = shared_case.make()
    record = _acquire(made, lock_name, identity())
    if made.notifies:
        _listen(made, lock_name)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        fine = False
        try:
            fine = ok(made.observe(lock_name, TIMEOUT)).record == record
            fine = fine and (not made.notifies or ok(made.wait_for_release(lock_name, LISTEN_SETUP)) is False)
            made.close()
        finally:
            os._exit(0 if fine else 1)
    assert _exit_code(child, TIMEOUT * 2) == 0
    # The parent's connections were neither used nor closed by the child.
    assert ok(made.renew(record, TTL, TIMEOUT)).token == record.token
    if made.notifies:
        thread, outcome = waiter(made, lock_name, TIMEOUT)
        time.sleep(0.1)
        ok(made.release(record, TIMEOUT))
        thread.join(TIMEOUT)
        assert outcome[0] is True
    made.close()


# -- what is stored, and what a hand edit can do to it ------------------------------------------


def _corruptions() -> list[Any]:
    return [
        param(kind, corruption, id=corruption.id)
        for kind, traits in TRAITS.items()
        for corruption in traits.corruptions
    ]


@pytest.mark.parametrize(("kind", "corruption"), _corruptions())
def test_a_corrupted_record_is_a_malformed_record_not_an_exception(
    kind: str, corruption: Corruption, request: pytest.FixtureRequest, tmp_path: Path, lock_name: str
) -> None:
    case = case_of(kind, request, tmp_path)
    assert case.url is not None
    url = case.traits.apart(case.url, f"t_{lock_name[5:]}")
    made = connect(url)
    record = _acquire(made, lock_name, identity())
    with case.traits.raw(url, made) as raw:
        corruption.spoil(raw, made, lock_name)
    error = err(made.observe(lock_name, TIMEOUT))
    assert isinstance(error, MalformedRecord), error
    assert corruption.problem in str(error), error
    # The connection is still good for the next call.
    assert ok(made.names(TIMEOUT)) == [lock_name]
    # The writing steps refuse or lose, but never raise.
    for outcome in (
        result(made.claim(Claim.after(record, identity(), TTL), TIMEOUT)),
        result(made.renew(record, TTL, TIMEOUT)),
        result(made.release(record, TIMEOUT)),
        result(made.revoke(record, TIMEOUT)),
    ):
        assert isinstance(outcome, Success | Failure)
    made.close()


def _spoiled(case: BackendCase, made: LockBackend, name: str, spoil: Callable[[Any, Any, str], None]) -> None:
    assert case.url is not None or isinstance(made, MemoryBackend)
    with case.traits.raw(case.url or "", made) as raw:
        spoil(raw, made, name)


def test_a_garbage_token_is_replaced_by_the_clock_in_ms_and_the_lock_works_again(
    shared_case: BackendCase, lock_name: str
) -> None:
    """Every store but memory, whose typed records cannot hold a garbage token."""
    made = shared_case.make()
    record = _acquire(made, lock_name, identity())
    _spoiled(shared_case, made, lock_name, shared_case.traits.corrupt_token)
    assert isinstance(result(made.observe(lock_name, TIMEOUT)).failure(), MalformedRecord)
    before = int(time.time() * 1000)
    token = ok(made.repair(lock_name, 0.0, 0, TIMEOUT))
    assert token is not None and token > record.token
    assert abs(token - before) < 60_000, "the new token is not the clock in milliseconds"
    assert _acquire(made, lock_name, identity()).token == token + 1
    made.close()


def test_force_release_of_a_malformed_record_reports_it_malformed_not_unreachable(
    shared_case: BackendCase, lock_name: str
) -> None:
    """``gomaster release`` must be able to point at ``repair``, which it cannot from an outage."""
    made = shared_case.make()
    _acquire(made, lock_name, identity())
    _spoiled(shared_case, made, lock_name, shared_case.traits.corrupt_token)
    problem = err(force_release(made, lock_name, TIMEOUT))
    assert isinstance(problem, MalformedRecord), f"reported as {problem!r}"
    assert problem.name == lock_name
    made.close()


def test_a_row_that_expires_in_centuries_is_claimable_after_the_hold_with_its_token(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    record = _acquire(backend, lock_name, identity())
    _spoiled(case, backend, lock_name, case.traits.expire_far_away)
    stuck = ok(backend.observe(lock_name, TIMEOUT))
    assert stuck.record is not None and stuck.record.expires_at > stuck.server_now + 10**9
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    assert _acquire(backend, lock_name, identity()).token == record.token + 1


def test_a_live_lease_moved_into_the_stores_past_is_lost_and_claimable(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    """Expiry is judged by the store's clock alone: no local clock moves here."""
    live = _acquire(backend, lock_name, identity(), ttl=LONG_TTL)
    # A contender whose own clock says the lease is over is still refused by the statement.
    forced = Claim.after(live, identity(), TTL)
    assert isinstance(err(backend.claim(forced, TIMEOUT)), Conflict)
    _spoiled(case, backend, lock_name, case.traits.expire_now)
    assert isinstance(err(backend.renew(live, TTL, TIMEOUT)), Lost)
    assert ok(backend.claim(forced, TIMEOUT)).token == live.token + 1


def _tables() -> list[Any]:
    return [param(kind, table, id=table.id) for kind, traits in TRAITS.items() for table in traits.tables]


@pytest.mark.parametrize(("kind", "table"), _tables())
def test_a_hand_made_lock_table_is_checked_and_a_wrong_one_named_with_what_is_wrong(
    kind: str, table: Table, request: pytest.FixtureRequest, tmp_path: Path, lock_name: str
) -> None:
    case = case_of(kind, request, tmp_path)
    assert case.url is not None
    ok(connect(case.url).names(TIMEOUT))  # the store (and its database) exist
    tag = f"t_{lock_name[5:]}"
    url = case.traits.apart(case.url, tag)
    made = connect(url)
    with case.traits.raw(url, made) as raw:
        for statement in table.ddl.split("; "):
            raw(statement)
    if table.says:
        error = err(made.observe(lock_name, TIMEOUT))
        assert isinstance(error, BackendError), error
        for words in (*table.says, tag):
            assert words in error.message, error.message
    else:
        assert _acquire(made, lock_name, identity()).token == 1
    made.close()


def test_names_are_compared_exactly(backend: LockBackend, lock_name: str) -> None:
    names = [f"{lock_name}:{suffix}" for suffix in ("lock", "lock ", "Lock", "löck")]
    records = [_acquire(backend, name, identity()) for name in names]
    assert all(record.token == 1 for record in records)
    assert sorted(n for n in ok(backend.names(TIMEOUT)) if n.startswith(lock_name)) == sorted(names)
    for name, record in zip(names, records, strict=True):
        assert ok(backend.observe(name, TIMEOUT)).record == record


def test_a_name_utf8_cannot_encode_is_stored_or_refused_never_raised(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    name = f"{lock_name} lone surrogate \ud800"
    if case.traits.stores_any_name:
        record = _acquire(backend, name, identity())
        assert ok(backend.observe(name, TIMEOUT)).record == record
    else:
        error = err(backend.observe(name, TIMEOUT))
        assert isinstance(error, BackendError)
        assert "encode" in error.message
    assert ok(backend.observe(f"{lock_name}-fine", TIMEOUT)).record is None


# -- settings -----------------------------------------------------------------------------------


def _refusals(which: str) -> list[Any]:
    return [
        param(kind, refusal, id=refusal.id)
        for kind, traits in TRAITS.items()
        for refusal in getattr(traits, which)
    ]


def _says(message: str, words: tuple[str, ...]) -> None:
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    assert SECRET not in message and QUOTED not in message, message


@pytest.mark.parametrize(("kind", "refusal"), _refusals("bad_urls"))
def test_bad_settings_in_a_url_are_refused_before_connecting_saying_what_is_wrong(
    kind: str, refusal: Refusal, tmp_path: Path
) -> None:
    assert isinstance(refusal.given, str)
    url = refusal.given.format(dir=tmp_path)
    with pytest.raises(ValueError) as caught:
        connect(url)
    _says(str(caught.value), refusal.says)
    parsed = parse_backend(url)
    assert isinstance(parsed, Failure)
    assert parsed.failure() == str(caught.value)


@pytest.mark.parametrize(("kind", "refusal"), _refusals("bad_keywords"))
def test_bad_keyword_settings_are_refused_saying_what_is_wrong(
    kind: str, refusal: Refusal, tmp_path: Path
) -> None:
    assert isinstance(refusal.given, dict)
    given = {
        key: value.format(dir=tmp_path) if isinstance(value, str) else value
        for key, value in refusal.given.items()
    }
    with pytest.raises(ValueError) as caught:
        TRAITS[kind].make(**given)
    _says(str(caught.value), refusal.says)


def test_keywords_build_the_same_backend_as_the_url(shared_case: BackendCase, lock_name: str) -> None:
    assert shared_case.url is not None
    url = shared_case.traits.apart(shared_case.url, f"t_{lock_name[5:]}")
    if shared_case.traits.driver_option:
        url = with_query(url, **shared_case.traits.driver_option)
    by_url = connect(url)
    by_keywords = shared_case.traits.keywords(url)
    assert by_keywords.url == by_url.url
    record = _acquire(by_url, lock_name, identity())
    assert ok(by_keywords.observe(lock_name, TIMEOUT)).record == record
    again = connect(by_keywords.url)
    assert ok(again.observe(lock_name, TIMEOUT)).record == record
    for made in (by_url, by_keywords, again):
        made.close()


# -- release notices ----------------------------------------------------------------------------


def test_a_wait_with_no_release_returns_false_after_its_timeout(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name, identity())
    elapsed, woken = _timed(lambda: ok(backend.wait_for_release(lock_name, 0.3)))
    assert woken is False
    if backend.notifies:
        assert 0.3 <= elapsed < 0.3 + SLACK
    else:
        assert elapsed < 0.3 + SLACK
    # A release that does not match (the lease is not that holder's) sends nothing either.
    assert ok(backend.release(replace(record, holder="someone-else"), TIMEOUT)) is False
    assert ok(backend.wait_for_release(lock_name, 0.2)) is False


def test_a_notice_for_another_name_is_kept_for_that_names_own_wait(
    shared_case: BackendCase, lock_name: str
) -> None:
    made = shared_case.make()
    if not made.notifies:
        # A polling backend keeps no notices: every wait reports that none came.
        assert ok(made.wait_for_release(lock_name, 0.05)) is False
        return
    first, second = _acquire(made, f"{lock_name}-1", identity()), _acquire(made, f"{lock_name}-2", identity())
    _listen(made, f"{lock_name}-2")
    _listen(made, f"{lock_name}-1")
    ok(made.release(second, TIMEOUT))
    assert ok(made.wait_for_release(f"{lock_name}-1", 0.2)) is False, "a notice for the second woke the first"
    elapsed, woken = _timed(lambda: ok(made.wait_for_release(f"{lock_name}-2", TIMEOUT)))
    assert woken is True
    assert elapsed < NOTIFY_WITHIN, "the kept notice answers at once"
    ok(made.release(first, TIMEOUT))
    assert ok(made.wait_for_release(f"{lock_name}-1", TIMEOUT)) is True
    made.close()


def test_waiters_for_two_names_on_one_object_wake_only_for_their_own(
    shared_case: BackendCase, lock_name: str
) -> None:
    holder, follower = shared_case.make(), shared_case.make()
    if not follower.notifies:
        return
    mine = _acquire(holder, f"{lock_name}-a", identity())
    other = _acquire(holder, f"{lock_name}-b", identity())
    thread_a, outcome_a = waiter(follower, f"{lock_name}-a", 2.0)
    thread_b, outcome_b = waiter(follower, f"{lock_name}-b", 0.8)
    time.sleep(0.1)
    assert ok(holder.revoke(other, TIMEOUT)) is True, "a revoke frees nothing yet, so it is silent"
    assert ok(holder.release(mine, TIMEOUT)) is True
    thread_a.join(TIMEOUT)
    thread_b.join(TIMEOUT)
    assert outcome_a[0] is True
    assert outcome_b[0] is False
    for made in (holder, follower):
        made.close()


def test_closing_the_backend_during_a_wait_returns_at_once_and_the_backend_still_works(
    shared_case: BackendCase, lock_name: str
) -> None:
    made = shared_case.make()
    if not made.notifies:
        return
    record = _acquire(made, lock_name, identity())
    thread, outcome = waiter(made, lock_name, CLOSE_WAIT)
    time.sleep(0.1)
    assert _timed(made.close)[0] < CLOSE_WAIT
    thread.join(TIMEOUT)
    assert outcome[0] is False
    assert ok(made.renew(record, TTL, TIMEOUT)).token == record.token
    _listen(made, lock_name)  # a closed backend reconnects on demand
    made.close()
