"""The batched steps of one supervisor that carries many lock names: every backend, real stores.

``wait_for_releases`` is the one listener for every followed name, ``observe_many`` and
``renew_many`` send many names' steps in one round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from returns.result import Failure, Result, Success

from bench.proxy import CountingProxy
from gomaster.backends import LockBackend, connect
from gomaster.core.decide import Claim
from gomaster.core.errors import Lost
from gomaster.core.record import LockRecord, MalformedRecord, Observation
from tests.backends.conftest import BackendCase
from tests.backends.traits import Spoil, parts
from tests.helpers import free_port, identity, ok

TIMEOUT = 5.0
TTL = 5.0
#: How far past its timeout a wait may return.
SLACK = 0.5
#: Long enough for a first wait to connect its listener and subscribe.
LISTEN_SETUP = 0.2
#: A wait that nothing answers.
QUIET = 0.3
#: The names one supervisor may carry.
MOST = 1000
#: Fewer where claiming them one by one would not fit a test's time: SecantusDB takes about
#: 20 ms per claim (and a few ms per document of a batch), more on a busy machine.
FEWER = {"mongodb": 250}
#: Outlives claiming the names one by one.
LONG_TTL = 120.0
#: What a batch of them gets.
MANY_TIMEOUT = 30.0

T = TypeVar("T")


def _held(backend: LockBackend, name: str, ttl: float = TTL) -> LockRecord:
    """A fresh name, claimed by a new node."""
    return ok(backend.claim(Claim.first(name, identity(), ttl), TIMEOUT))


def _names(lock_name: str, count: int) -> list[str]:
    return [f"{lock_name}-{number}" for number in range(count)]


def _timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.monotonic()
    value = call()
    return time.monotonic() - started, value


def _spoil(case: BackendCase, made: LockBackend, name: str, spoil: Spoil) -> None:
    """Change ``name``'s stored record behind ``made``'s back."""
    with case.traits.raw(case.url or "", made) as raw:
        spoil(raw, made, name)


def _seen(observations: dict[str, Result[Observation, MalformedRecord]], name: str) -> Observation:
    found = observations[name]
    assert isinstance(found, Success), f"{name}: {found}"
    observation: Observation = found.unwrap()
    return observation


def _renewed(renewals: dict[str, Result[LockRecord, Lost]], name: str) -> LockRecord:
    found = renewals[name]
    assert isinstance(found, Success), f"{name} was not renewed: {found}"
    record: LockRecord = found.unwrap()
    return record


def _taken_over(case: BackendCase, made: LockBackend, name: str) -> LockRecord:
    """Claim ``name``, let its lease pass by the store's clock, and have another node take it."""
    mine = _held(made, name)
    _spoil(case, made, name, case.traits.expire_now)
    seen = ok(made.observe(name, TIMEOUT)).record
    assert seen is not None
    ok(made.claim(Claim.after(seen, identity(), TTL), TIMEOUT))
    return mine


# -- wait_for_releases --------------------------------------------------------------------------


def _answers_none_at_once(backend: LockBackend, names: list[str]) -> None:
    """A backend that cannot notify says at once that no notice came: its elector polls."""
    elapsed, heard = _timed(lambda: ok(backend.wait_for_releases(names, QUIET)))
    assert heard == frozenset()
    assert elapsed < SLACK, f"a backend that cannot notify took {elapsed:.2f} s to say so"


def test_a_wait_for_many_names_returns_the_one_another_thread_released(
    case: BackendCase, lock_name: str
) -> None:
    holder, follower = case.make(), case.make()
    names = _names(lock_name, 3)
    records = [_held(holder, name) for name in names]
    if not follower.notifies:
        _answers_none_at_once(follower, names)
        return
    assert ok(follower.wait_for_releases(names, LISTEN_SETUP)) == frozenset()
    outcome: list[frozenset[str]] = []
    waiting = threading.Thread(target=lambda: outcome.append(ok(follower.wait_for_releases(names, TIMEOUT))))
    waiting.start()
    time.sleep(0.1)
    assert ok(holder.release(records[1], TIMEOUT)) is True
    waiting.join(TIMEOUT)
    assert outcome == [frozenset({names[1]})]
    for made in (holder, follower):
        made.close()


def test_releases_while_nobody_waits_are_kept_each_for_the_next_wait_that_names_it(
    case: BackendCase, lock_name: str
) -> None:
    made = case.make()
    first, second, new = _names(lock_name, 3)
    records = [_held(made, name) for name in (first, second, new)]
    if not made.notifies:
        ok(made.release(records[0], TIMEOUT))
        _answers_none_at_once(made, [first, second, new])  # a polling backend keeps no notice
        return
    assert ok(made.wait_for_releases([first, second], LISTEN_SETUP)) == frozenset()
    for record in records[:2]:
        ok(made.release(record, TIMEOUT))
    # The names change between waits: a new one is followed from now on, the second is kept.
    assert ok(made.wait_for_releases([first, new], TIMEOUT)) == frozenset({first})
    assert ok(made.wait_for_releases([second], TIMEOUT)) == frozenset({second})
    assert ok(made.wait_for_releases([first, second, new], QUIET)) == frozenset(), "a notice came twice"
    ok(made.release(records[2], TIMEOUT))
    assert ok(made.wait_for_releases([first, second, new], TIMEOUT)) == frozenset({new})
    made.close()


def test_every_release_among_the_names_is_reported_and_no_other(case: BackendCase, lock_name: str) -> None:
    holder, follower = case.make(), case.make()
    names = _names(lock_name, 4)
    records = [_held(holder, name) for name in names]
    if not follower.notifies:
        ok(holder.release(records[0], TIMEOUT))
        _answers_none_at_once(follower, names)
        return
    assert ok(follower.wait_for_releases(names, LISTEN_SETUP)) == frozenset()
    for record in (records[0], records[2]):
        ok(holder.release(record, TIMEOUT))
    ok(holder.revoke(records[3], TIMEOUT))  # frees nothing yet, so it is silent
    heard: set[str] = set()
    deadline = time.monotonic() + TIMEOUT
    while heard != {names[0], names[2]} and time.monotonic() < deadline:
        heard |= ok(follower.wait_for_releases(names, deadline - time.monotonic()))
    assert heard == {names[0], names[2]}
    assert ok(follower.wait_for_releases(names, QUIET)) == frozenset()
    for made in (holder, follower):
        made.close()


def test_a_wait_for_names_nobody_releases_returns_an_empty_set_after_its_timeout(
    backend: LockBackend, lock_name: str
) -> None:
    names = _names(lock_name, 3)
    for name in names:
        _held(backend, name)
    if not backend.notifies:
        _answers_none_at_once(backend, names)
        return
    elapsed, heard = _timed(lambda: ok(backend.wait_for_releases(names, QUIET)))
    assert heard == frozenset()
    assert QUIET <= elapsed < QUIET + SLACK, f"returned after {elapsed:.2f} s"


def test_a_wait_for_no_names_returns_an_empty_set_within_its_timeout(backend: LockBackend) -> None:
    elapsed, heard = _timed(lambda: ok(backend.wait_for_releases((), QUIET)))
    assert heard == frozenset()
    assert elapsed < QUIET + SLACK


# -- observe_many -------------------------------------------------------------------------------


def test_observe_many_gives_held_released_and_absent_names_each_their_own_record_at_one_clock(
    backend: LockBackend, lock_name: str
) -> None:
    held, released, absent = _names(lock_name, 3)
    record = _held(backend, held)
    ok(backend.release(_held(backend, released), TIMEOUT))
    before = ok(backend.observe(held, TIMEOUT)).server_now
    seen = ok(backend.observe_many([held, released, absent], TIMEOUT))
    after = ok(backend.observe(held, TIMEOUT)).server_now
    assert set(seen) == {held, released, absent}
    assert _seen(seen, held).record == record
    assert _seen(seen, released) == Observation(
        ok(backend.observe(released, TIMEOUT)).record, _seen(seen, released).server_now
    )
    assert _seen(seen, absent).record is None
    clocks = {_seen(seen, name).server_now for name in seen}
    assert len(clocks) == 1, f"more than one clock: {clocks}"
    assert before <= clocks.pop() <= after


def test_a_malformed_record_spoils_only_its_own_entry_of_a_batch(
    shared_case: BackendCase, lock_name: str
) -> None:
    """Every store but memory, whose typed records cannot be spoiled."""
    made = shared_case.make()
    good, bad, absent = _names(lock_name, 3)
    record, spoilt = _held(made, good), _held(made, bad)
    _spoil(shared_case, made, bad, shared_case.traits.corrupt_token)
    seen = ok(made.observe_many([good, bad, absent], TIMEOUT))
    problem = seen[bad]
    assert isinstance(problem, Failure) and isinstance(problem.failure(), MalformedRecord), problem
    assert problem.failure().name == bad
    assert _seen(seen, good).record == record
    assert _seen(seen, absent).record is None
    renewed = ok(made.renew_many([record, spoilt], TTL, TIMEOUT))
    assert _renewed(renewed, good).token == record.token
    assert renewed[bad] == Failure(Lost(spoilt))
    made.close()


# -- renew_many ---------------------------------------------------------------------------------


def test_renew_many_renews_every_lease_still_ours_and_loses_only_the_others(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    names = _names(lock_name, 5)
    live, also_live, expired, taken, released = names
    mine = {name: _held(backend, name) for name in (live, also_live, expired, released)}
    mine[taken] = _taken_over(case, backend, taken)
    _spoil(case, backend, expired, case.traits.expire_now)
    ok(backend.release(mine[released], TIMEOUT))
    before = ok(backend.observe_many(names, TIMEOUT))
    time.sleep(0.01)  # so that a renewal moves the times on
    renewed = ok(backend.renew_many([mine[name] for name in names], TTL, TIMEOUT))
    after = ok(backend.observe_many(names, TIMEOUT))
    assert set(renewed) == set(names)
    for name in (live, also_live):
        record = _renewed(renewed, name)
        assert (record.holder, record.token, record.acquired_at) == (
            mine[name].holder,
            mine[name].token,
            mine[name].acquired_at,
        )
        assert record.renewed_at > mine[name].renewed_at
        assert record.expires_at == pytest.approx(record.renewed_at + TTL, abs=0.002)
        assert _seen(after, name).record == record, "what renew_many returned is not what is stored"
    assert _renewed(renewed, live).renewed_at == _renewed(renewed, also_live).renewed_at, "two clocks"
    for name in (expired, taken, released):
        assert renewed[name] == Failure(Lost(mine[name])), f"{name}: {renewed[name]}"
        assert _seen(after, name).record == _seen(before, name).record, f"{name} was changed"


def test_a_batch_of_no_names_answers_empty_without_touching_the_store(server_case: BackendCase) -> None:
    """A server nobody listens on would fail any round trip."""
    made = connect(server_case.traits.address("127.0.0.1", free_port()))
    assert ok(made.observe_many([], TIMEOUT)) == {}
    assert ok(made.renew_many([], TTL, TIMEOUT)) == {}
    made.close()


def test_a_batch_of_a_thousand_names_observes_and_renews_them_all(case: BackendCase, lock_name: str) -> None:
    made = case.make()
    names = _names(lock_name, FEWER.get(case.kind, MOST))
    records = [_held(made, name, LONG_TTL) for name in names]
    seen = ok(made.observe_many(names, MANY_TIMEOUT))
    assert [_seen(seen, name).record for name in names] == records
    renewed = ok(made.renew_many(records, TTL, MANY_TIMEOUT))
    assert [_renewed(renewed, name).token for name in names] == [record.token for record in records]
    made.close()


def test_each_batch_is_one_round_trip_but_a_mongodb_renewal_two(
    server_case: BackendCase, lock_name: str
) -> None:
    """Counted on the wire by the benchmarks' relay, as ``test_each_step_is_one_round_trip`` does.
    MongoDB has no command that updates many documents and answers them."""
    assert server_case.url is not None
    url = server_case.traits.apart(server_case.url, f"t_{lock_name[5:]}")
    server = parts(url)
    names = _names(lock_name, 20)
    with CountingProxy(server.port or 0, server.host or "127.0.0.1") as proxy:
        made = connect(server_case.traits.through(url, proxy.port))
        warm = _held(made, "warm-up")  # connect, set up, load scripts
        ok(made.renew_many([ok(made.renew(warm, TTL, TIMEOUT))], TTL, TIMEOUT))
        ok(made.observe_many(["warm-up"], TIMEOUT))
        records = [_held(made, name) for name in names]

        def trips(step: Callable[[], object]) -> int:
            before = proxy.turns()
            step()
            after = proxy.turns()
            before += [0] * (len(after) - len(before))
            return max(b - a for a, b in zip(before, after, strict=True))

        renewing = 2 if server_case.kind == "mongodb" else 1
        assert trips(lambda: ok(made.observe_many(names, TIMEOUT))) == 1
        assert trips(lambda: ok(made.renew_many(records, TTL, TIMEOUT))) == renewing
        assert trips(lambda: ok(made.observe_many([], TIMEOUT))) == 0
        assert trips(lambda: ok(made.renew_many([], TTL, TIMEOUT))) == 0
        made.close()
