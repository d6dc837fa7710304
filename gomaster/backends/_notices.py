"""Release notices, waited for the same way on every backend that can send them.

PostgreSQL (LISTEN), Redis (pub/sub) and MongoDB (a change stream) each deliver "lock X was
released" on a connection of its own, never the one the steps use, so a waiting follower never
delays a renewal. :class:`Notices` keeps what a process subscribed to and notices that came
while nobody waited for them (they answer the next wait for that name at once); the backend
writes only how to subscribe and how to receive.

Any number of threads may wait at once, each for one name or for many: one of them, the reader,
holds the session and receives for all; the others sleep until it hands them their notices, or
until it is done and one of them reads in its place. A wait for many names (a supervisor's one
listener for every name it follows) returns as soon as any of them has a notice, with all of
them that have one by then.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Generic, Protocol, TypeVar

from returns.result import Failure, Result, Success

from gomaster.backends._session import Session
from gomaster.backends._settings import MAX_SECONDS
from gomaster.core.errors import BackendError

_C = TypeVar("_C")
_C_contra = TypeVar("_C_contra", contravariant=True)
_STEP = "wait_for_release"


class Listener(Protocol[_C_contra]):
    """How one backend subscribes to release notices and receives them."""

    def subscribe(self, conn: _C_contra, channels: Collection[str]) -> None:
        """Start receiving notices on every one of ``channels`` (all at once: a supervisor
        follows hundreds of names, and one round trip each would delay its first wait)."""
        ...

    def receive(self, conn: _C_contra, timeout: float) -> Iterable[str]:
        """Channels that had a notice, waiting at most ``timeout`` (``math.inf``: no limit)
        for the first; empty when none came in time."""
        ...


class Notices(Generic[_C]):
    """Release notices for one backend in one process, over a session of their own.

    ``turn`` bounds one ``receive``: a reader subscribes to the channels that other threads
    began to wait for only between two, so a backend whose reader cannot be woken sets it to
    how late such a subscription may be (``math.inf``: when the reader's own wait ends).
    """

    def __init__(self, session: Session[_C], listener: Listener[_C], *, turn: float = math.inf) -> None:
        self.session = session
        self.listener = listener
        self.turn = turn
        self.channels: set[str] = set()
        self.pending: set[str] = set()
        #: Every channel waited for in this process: a reader subscribes to those it lacks.
        self.wanted: set[str] = set()
        #: How many times :meth:`close` ran: a wait that sees it move returns False.
        self.closes = 0
        self._begin()
        session.on_drop = self.forget

    def _begin(self) -> None:
        self._pid = os.getpid()
        self._changed = threading.Condition()
        self._reading = False

    def forget(self) -> None:
        """The connection is gone, and with it every subscription and unread notice (in a forked
        child, also the parent's reader, which is none of the child's)."""
        if self._pid != os.getpid():
            self._begin()
        self.channels.clear()
        self.pending.clear()

    def close(self, interrupt: Callable[[_C], None] | None = None) -> None:
        """Close the connection. Every wait in progress returns False: at once when ``interrupt``
        (run by the closing thread) wakes a reader blocked on the connection, else when it ends."""
        with self._changed:
            self.closes += 1
            self._changed.notify_all()
        conn = self.session.conn
        if interrupt is not None and conn is not None:
            interrupt(conn)
        self.session.close()

    def wait_for(
        self, names: Collection[str], timeout: float, channel: Callable[[str], str]
    ) -> Result[frozenset[str], BackendError]:
        """:meth:`wait_any` for lock ``names``, each announced on ``channel(name)``: the names
        that had a notice."""
        channels = {channel(name): name for name in names}
        return self.wait_any(channels, timeout).map(lambda heard: frozenset(channels[c] for c in heard))

    def wait_any(self, channels: Collection[str], timeout: float) -> Result[frozenset[str], BackendError]:
        """Block up to ``timeout`` for a notice on any of ``channels``: those that had one
        (perhaps while nobody waited; each notice is handed out once), empty when time ran out or
        :meth:`close` ended the wait. No channels: waits out ``timeout`` without connecting, so
        a listener with nothing to follow does not spin."""
        wanted = frozenset(channels)
        deadline = time.monotonic() + timeout
        closes = self.closes
        with self._changed:
            if not wanted:
                self._changed.wait_for(
                    lambda: self.closes != closes, min(deadline - time.monotonic(), MAX_SECONDS)
                )
                return Success(frozenset())
            self.wanted |= wanted
            settled = self._changed.wait_for(
                lambda: not self._reading or not wanted.isdisjoint(self.pending) or self.closes != closes,
                min(deadline - time.monotonic(), MAX_SECONDS),
            )
            if not settled or self.closes != closes:
                return Success(frozenset())
            found = self._take(wanted)
            if found:
                return Success(found)
            self._reading = True
        try:
            return self._read(wanted, timeout, deadline, closes)
        finally:
            with self._changed:
                self._reading = False
                self._changed.notify_all()

    def _take(self, wanted: frozenset[str]) -> frozenset[str]:
        """The pending notices among ``wanted``, handed out (under ``_changed``)."""
        found = wanted & self.pending
        self.pending -= found
        return found

    def _read(
        self, wanted: frozenset[str], timeout: float, deadline: float, closes: int
    ) -> Result[frozenset[str], BackendError]:
        """Be the reader until a notice among ``wanted`` comes, ``deadline`` passes or a close."""
        session = self.session

        def read() -> Result[frozenset[str], BackendError]:
            return session.locked(
                _STEP, timeout, deadline, lambda conn: self._receive(conn, wanted, deadline)
            )

        if not session.hold(timeout):
            return Success(frozenset())
        try:
            reused = session.conn is not None
            outcome = read()
            if (
                reused
                and isinstance(outcome, Failure)
                and time.monotonic() < deadline
                and self.closes == closes
            ):
                # An idle listener learns that its server restarted only by waiting on it; the
                # notices it would have had are gone anyway, so listen afresh at once.
                outcome = read()
            return Success(frozenset()) if self.closes != closes else outcome
        finally:
            session.let_go()

    def _receive(self, conn: _C, wanted: frozenset[str], deadline: float) -> frozenset[str]:
        """Hand every notice heard to its waiter, subscribing to new channels between turns."""
        heard: set[str] = set()
        while True:
            with self._changed:
                if heard:
                    self.pending |= heard
                    self._changed.notify_all()
                found = self._take(wanted)
                if found:
                    return found
                fresh = self.wanted - self.channels
            if fresh:
                self.listener.subscribe(conn, fresh)
                self.channels |= fresh
            left = deadline - time.monotonic()
            if left <= 0:
                return frozenset()
            heard = set(self.listener.receive(conn, min(left, self.turn)))
