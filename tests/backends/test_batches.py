"""The batched steps of one supervisor that carries many lock names: every backend, real stores.

``wait_for_releases`` is the one listener for every followed name, ``observe_many`` and
``renew_many`` send many names' steps in one round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from gomaster.backends import LockBackend
from gomaster.core.decide import Claim
from gomaster.core.record import LockRecord
from tests.backends.conftest import BackendCase
from tests.helpers import identity, ok

TIMEOUT = 5.0
TTL = 5.0
#: How far past its timeout a wait may return.
SLACK = 0.5
#: Long enough for a first wait to connect its listener and subscribe.
LISTEN_SETUP = 0.2
#: A wait that nothing answers.
QUIET = 0.3

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


# -- wait_for_releases --------------------------------------------------------------------------


def test_a_wait_for_many_names_returns_the_one_another_thread_released(
    case: BackendCase, lock_name: str
) -> None:
    holder, follower = case.make(), case.make()
    names = _names(lock_name, 3)
    records = [_held(holder, name) for name in names]
    if not follower.notifies:
        elapsed, heard = _timed(lambda: ok(follower.wait_for_releases(names, QUIET)))
        assert heard == frozenset()
        assert elapsed < SLACK, f"a backend that cannot notify took {elapsed:.2f} s to say so"
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
    if not made.notifies:
        return
    first, second, new = _names(lock_name, 3)
    records = [_held(made, name) for name in (first, second, new)]
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
    if not follower.notifies:
        return
    names = _names(lock_name, 4)
    records = [_held(holder, name) for name in names]
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
    elapsed, heard = _timed(lambda: ok(backend.wait_for_releases(names, QUIET)))
    assert heard == frozenset()
    if backend.notifies:
        assert QUIET <= elapsed < QUIET + SLACK, f"returned after {elapsed:.2f} s"
    else:
        assert elapsed < SLACK, f"a backend that cannot notify took {elapsed:.2f} s to say so"


def test_a_wait_for_no_names_returns_an_empty_set_within_its_timeout(backend: LockBackend) -> None:
    elapsed, heard = _timed(lambda: ok(backend.wait_for_releases((), QUIET)))
    assert heard == frozenset()
    assert elapsed < QUIET + SLACK
