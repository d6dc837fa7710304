"""The guard of work in the application: it stops the work when the published lease runs out,
and starts it again when the supervisor publishes a renewal of the same token after all (what
``make chaos`` found: a renewal answered just before the deadline, published just after it,
left an asyncio node master with its work stopped). A real shared lease, no supervisor."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from gomaster.runtime.clock import boottime
from gomaster.runtime.guard import Guard
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.master import _ThreadHooks

WAIT = 5.0


class _Calls:
    """What was called, in order: the guard's requests, or the hooks that ran."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.changed = threading.Condition()

    def note(self, what: str, token: int) -> None:
        with self.changed:
            self.seen.append((what, token))
            self.changed.notify_all()

    def stop(self, token: int) -> None:
        self.note("stop", token)

    def resume(self, token: int) -> None:
        self.note("resume", token)

    def wait_for(self, count: int, timeout: float = WAIT) -> list[tuple[str, int]]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.seen) >= count, timeout)
            return list(self.seen)


@contextlib.contextmanager
def _lapsed() -> Iterator[tuple[SharedLease, _Calls, Guard]]:
    """A guard whose tenure 7 ran out of lease: it has asked for the stop, nothing else."""
    lease, calls = SharedLease(1).at(0), _Calls()
    guard = Guard(lease, grace=2.0, overrun="warn", ask_stop=calls.stop, resume=calls.resume)
    try:
        lease.publish(7, boottime() + 0.1)
        guard.watch(7)
        assert calls.wait_for(1) == [("stop", 7)]
        yield lease, calls, guard
    finally:
        guard.close()


def test_a_lease_published_again_after_the_guard_stopped_the_work_starts_it_again() -> None:
    with _lapsed() as (lease, calls, guard):
        guard.settle(7)
        time.sleep(0.1)
        assert calls.seen == [("stop", 7)], "resumed while the lease was still out"
        lease.publish(7, boottime() + 5.0)  # the renewal, published late
        assert calls.wait_for(2) == [("stop", 7), ("resume", 7)]


def test_a_revoked_or_replaced_lease_never_resumes_the_stopped_work() -> None:
    for end in ("revoke", "replace"):
        with _lapsed() as (lease, calls, guard):
            guard.settle(7)
            if end == "revoke":
                lease.revoke()  # the demotion
                time.sleep(0.1)
                lease.publish(7, boottime() + 5.0)  # a stale value; the guard has let go of 7
            else:
                lease.publish(8, boottime() + 5.0)  # another tenure's
            time.sleep(0.5)
            assert calls.seen == [("stop", 7)], f"resumed after a {end}"


def test_work_that_has_not_settled_is_not_resumed_until_it_has() -> None:
    with _lapsed() as (lease, calls, guard):
        lease.publish(7, boottime() + 5.0)
        time.sleep(0.3)
        assert calls.seen == [("stop", 7)], "resumed work that was still stopping"
        guard.settle(7)
        assert calls.wait_for(2) == [("stop", 7), ("resume", 7)]


def _lapsed_hooks(lease: SharedLease, seen: _Calls, stopped: list[int]) -> _ThreadHooks:
    """Thread hooks whose tenure 7 started and then stopped when its lease ran out."""
    hooks = _ThreadHooks(
        (lambda: seen.note("start hook", 7), lambda: seen.note("stop hook", 7)),
        lease,
        grace=2.0,
        overrun="warn",
        stopped=stopped.append,
        failed=lambda text: None,
    )
    lease.publish(7, boottime() + 0.2)
    hooks.elected(7)
    assert seen.wait_for(2) == [("start hook", 7), ("stop hook", 7)]  # the second at the deadline
    assert stopped == [], "the supervisor was told of a stop it did not ask for"
    return hooks


def test_thread_hooks_stop_when_the_lease_runs_out_start_again_when_it_comes_back_and_report_once() -> None:
    lease, seen, stopped = SharedLease(1).at(0), _Calls(), list[int]()
    hooks = _lapsed_hooks(lease, seen, stopped)
    try:
        lease.publish(7, boottime() + 5.0)
        assert seen.wait_for(3)[2] == ("start hook", 7), "the start hook did not run again"
        lease.revoke()
        hooks.demoted(7)
        assert seen.wait_for(4)[3] == ("stop hook", 7), "the demotion did not run the stop hook"
        deadline = time.monotonic() + WAIT
        while stopped != [7] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stopped == [7]
    finally:
        hooks.close()


def test_a_demotion_heard_before_the_lease_came_back_keeps_the_hooks_stopped() -> None:
    lease, seen, stopped = SharedLease(1).at(0), _Calls(), list[int]()
    hooks = _lapsed_hooks(lease, seen, stopped)
    try:
        hooks.demoted(7)  # first; a stale renewal is published after it
        lease.publish(7, boottime() + 5.0)
        time.sleep(0.5)
        assert seen.seen == [("start hook", 7), ("stop hook", 7)], "a hook ran after the demotion"
        assert stopped == [7]
    finally:
        hooks.close()
