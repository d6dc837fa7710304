"""Release notices, waited for the same way on every backend that can send them.

PostgreSQL (LISTEN), Redis (pub/sub) and MongoDB (a change stream) each deliver "lock X was
released" on a connection of its own, never the one the steps use, so a waiting follower never
delays a renewal. :class:`Notices` keeps what a process subscribed to and notices that came
while it waited for another name (they answer the next wait for that name at once); the
backend writes only how to subscribe and how to receive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from returns.result import Failure, Result, Success

from gomaster.backends._session import Session
from gomaster.core.errors import BackendError

_C = TypeVar("_C")
_C_contra = TypeVar("_C_contra", contravariant=True)


class Listener(Protocol[_C_contra]):
    """How one backend subscribes to release notices and receives them."""

    def subscribe(self, conn: _C_contra, channel: str) -> None:
        """Start receiving notices on ``channel``."""
        ...

    def receive(self, conn: _C_contra, timeout: float) -> Iterable[str]:
        """Channels that had a notice, waiting at most ``timeout`` (``math.inf``: no limit)
        for the first; empty when none came in time."""
        ...


class Notices(Generic[_C]):
    """Release notices for one backend in one process, over a session of their own."""

    def __init__(self, session: Session[_C], listener: Listener[_C]) -> None:
        self.session = session
        self.listener = listener
        self.channels: set[str] = set()
        self.pending: set[str] = set()
        #: How many times :meth:`close` ran: a wait that sees it move returns False.
        self.closes = 0
        session.on_drop = self.forget

    def forget(self) -> None:
        """The connection is gone, and with it every subscription and unread notice."""
        self.channels.clear()
        self.pending.clear()

    def close(self, interrupt: Callable[[_C], None] | None = None) -> None:
        """Close the connection. A wait in progress returns False: at once when ``interrupt``
        (run by the closing thread) wakes a reader blocked on the connection, else when it ends."""
        self.closes += 1
        conn = self.session.conn
        if interrupt is not None and conn is not None:
            interrupt(conn)
        self.session.close()

    def wait(self, channel: str, timeout: float) -> Result[bool, BackendError]:
        """Block up to ``timeout`` for a notice on ``channel``: True when one came (perhaps while
        nobody waited), False when time ran out, another thread held the listener all along or
        :meth:`close` ended the wait."""
        deadline = time.monotonic() + timeout
        closes = self.closes
        session = self.session
        if not session.hold(timeout):
            return Success(False)
        try:
            reused = session.conn is not None
            outcome = session.locked(
                "wait_for_release", timeout, deadline, lambda conn: self._wait(conn, channel, deadline)
            )
            if (
                reused
                and isinstance(outcome, Failure)
                and time.monotonic() < deadline
                and self.closes == closes
            ):
                # An idle listener learns that its server restarted only by waiting on it; the
                # notices it would have had are gone anyway, so listen afresh at once.
                outcome = session.locked(
                    "wait_for_release", timeout, deadline, lambda conn: self._wait(conn, channel, deadline)
                )
            return Success(False) if self.closes != closes else outcome
        finally:
            session.let_go()

    def _wait(self, conn: _C, channel: str, deadline: float) -> bool:
        if channel not in self.channels:
            self.listener.subscribe(conn, channel)
            self.channels.add(channel)
        while channel not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pending.update(self.listener.receive(conn, math.inf if left == math.inf else left))
        self.pending.discard(channel)
        return True
