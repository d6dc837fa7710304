"""One process's connection to a store, shared by every backend: the plumbing, written once.

A backend object is picklable configuration; the connection it uses belongs to one process.
:class:`Session` owns that connection for one backend in one process:

- it is made on first use (reuse-or-connect), checked for staleness before each reuse, and
  forgotten in a forked child (never closed under the parent, never shared across processes);
- every call runs under one lock, with a deadline that covers waiting for the lock too;
- any driver error drops the connection (its protocol state is unknown) and becomes a
  ``BackendError`` worded by :data:`WORDING` and passed through :func:`scrub`, the only way a
  driver's message reaches a log, an exception or ``repr``.

A backend supplies a :class:`Driver`: how to open, check, arm and close its connection, which
exceptions mean "this call failed", and a classifier that names the kind of each.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from returns.result import Failure, Result, Success

from gomaster.backends._durability import UnconfirmedError
from gomaster.backends._settings import Settings
from gomaster.backends.url import scrub
from gomaster.core.errors import BackendError

_C = TypeVar("_C")
_T = TypeVar("_T")

#: ``Lock.acquire`` refuses an infinite timeout; no wait here needs more than a day.
_LONGEST_WAIT = 86_400.0
#: Kinds that, once the deadline has passed, are most likely the deadline's doing.
_MAYBE_LATE = frozenset({"lost", "other", "unreachable"})
#: How long ``close()`` waits for a call in progress before leaving the close to that call.
_CLOSE_WAIT = 0.1
#: A socket timeout once the deadline has passed: enough to read bytes already received.
_MIN_SOCKET_TIMEOUT = 0.001

Kind = Literal[
    "timeout",
    "connect_timeout",
    "busy",
    "unresolved",
    "unreachable",
    "login",
    "no_database",
    "denied",
    "no_table",
    "read_only",
    "tls",
    "encoding",
    "lost",
    "setup",
    "late",
    "unconfirmed",
    "other",
]

#: Every error a backend reports, worded once. ``{cause}`` is the driver's own text, ``{detail}``
#: what the backend adds (the table, the user, the seconds), ``{where}`` the server.
WORDING: Mapping[Kind, str] = {
    "timeout": "{step} did not finish within {timeout:.3f} s on {where}; the connection was dropped",
    "connect_timeout": "cannot connect to {where} within connect_timeout={detail} s",
    "busy": "{step} did not finish within {timeout:.3f} s (waiting for another thread's call)",
    "unresolved": "cannot resolve host {detail}; check the host name ({cause})",
    "unreachable": "cannot connect to {where}: {cause}",
    "login": "cannot log in to {where}: check the user name and password ({cause})",
    "no_database": "{detail} does not exist on {where} ({cause})",
    "denied": "{step} denied on {where}: {detail} ({cause})",
    "no_table": "{step} failed on {where}: {detail} has gone ({cause})",
    "read_only": "{step} refused by {where}, a read-only replica: point the URL at the primary ({cause})",
    "tls": "TLS with {where} failed: {cause}",
    "encoding": "{step} failed on {where}: cannot encode a value ({cause})",
    "lost": "lost the connection to {where} during {step}: {cause}",
    "setup": "{cause}",
    "late": "{step} did not finish within {timeout:.3f} s (the server has not answered yet)",
    "unconfirmed": "{step} counted as failed: {where} wrote it without confirming a replica has it ({cause})",
    "other": "{step} failed on {where}: {cause}",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """What a driver's exception means: its kind, the driver's words, and what to add.

    ``keep`` leaves the connection in place (a reply that is merely late may still come);
    every other fault drops it.
    """

    kind: Kind
    cause: str = ""
    detail: str = ""
    keep: bool = False


class Driver(Protocol[_C]):
    """What a backend writes for its driver's connection; the session does the rest."""

    #: The exceptions that mean "this call failed" (anything else propagates, after a drop).
    errors: tuple[type[BaseException], ...]

    def open(self, deadline: float) -> _C:
        """A new, ready connection, made before ``deadline`` (``time.monotonic()``) or raising."""
        ...

    def usable(self, conn: _C) -> bool:
        """False when an idle connection is known to be dead (closed by the server, say)."""
        ...

    def arm(self, conn: _C, deadline: float) -> None:
        """Bound every wait of the next call on ``conn`` by ``deadline``."""
        ...

    def close(self, conn: _C) -> None:
        """Close ``conn`` without ceremony; never raises."""
        ...

    def classify(self, exc: BaseException) -> Fault:
        """The kind of failure ``exc`` (one of ``errors``) is."""
        ...


def seconds_left(deadline: float, cap: float | None = None) -> float:
    """What is left until ``deadline`` as a socket timeout: at least a millisecond (also once it
    has passed, or for NaN), at most a day (an infinite one overflows) and ``cap``."""
    left = deadline - time.monotonic()
    left = min(left, _LONGEST_WAIT) if left > _MIN_SOCKET_TIMEOUT else _MIN_SOCKET_TIMEOUT
    return left if cap is None else min(left, cap)


def word(fault: Fault, *, step: str, timeout: float, where: str, secrets: tuple[str, ...]) -> str:
    """The one message for ``fault``: from :data:`WORDING`, with every secret scrubbed."""
    cause, wording = " ".join(fault.cause.split()), WORDING[fault.kind]
    text = wording.format(step=step, timeout=timeout, where=where, cause=cause, detail=fault.detail)
    if cause and "{cause}" not in wording:
        text += f" ({cause})"  # a timeout keeps what the driver saw last: refused, reset, ...
    return scrub(text, *secrets)


class Session(Generic[_C]):
    """This process's connection for one backend, used by one thread at a time.

    ``url`` and ``where`` name the store in errors; ``secrets`` are scrubbed from every message.
    """

    def __init__(self, driver: Driver[_C], *, url: str, where: str, secrets: tuple[str, ...]) -> None:
        self.driver = driver
        #: Called when the connection is dropped or left to the parent (``Notices`` sets it).
        self.on_drop: Callable[[], None] | None = None
        self.url = url
        self.where = where
        self.secrets = secrets
        self.conn: _C | None = None
        #: The deadline (``time.monotonic()``) of the call in progress, for a driver whose
        #: staleness check may wait: MySQL's reads a late reply that the connection still owes.
        self.deadline = math.inf
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._close_requested = False
        _LIVE.add(self)

    def error(self, fault: Fault, step: str, timeout: float) -> BackendError:
        """``fault`` as the ``BackendError`` a step returns."""
        return BackendError(
            self.url, word(fault, step=step, timeout=timeout, where=self.where, secrets=self.secrets)
        )

    def run(self, step: str, timeout: float, work: Callable[[_C], _T]) -> Result[_T, BackendError]:
        """Do ``work`` on this process's connection within ``timeout``: the one place where a
        driver's exceptions become ``BackendError``. Waiting for another thread's call counts
        against the same deadline."""
        deadline = time.monotonic() + timeout
        if not self.hold(timeout):
            return Failure(self.error(Fault("busy"), step, timeout))
        try:
            return self.locked(step, timeout, deadline, work)
        finally:
            self.let_go()

    def locked(
        self, step: str, timeout: float, deadline: float, work: Callable[[_C], _T]
    ) -> Result[_T, BackendError]:
        """``run`` for a caller that already holds this session (see :meth:`hold`)."""
        driver = self.driver
        self.deadline = deadline
        try:
            return Success(work(self._connection(deadline)))
        except UnconfirmedError as exc:
            # The connection is in order: the server answered in full.
            return Failure(self.error(Fault("unconfirmed", str(exc), keep=True), step, timeout))
        except driver.errors as exc:
            fault = driver.classify(exc)
            if fault.kind in _MAYBE_LATE and time.monotonic() >= deadline:
                fault = Fault("timeout", fault.cause, keep=fault.keep)
            if not fault.keep:
                self.drop()
            return Failure(self.error(fault, step, timeout))
        except BaseException:
            self.drop()
            raise
        finally:
            if self._close_requested:
                self._close_requested = False
                self.drop()

    def hold(self, timeout: float) -> bool:
        """Take this session for a sequence of calls (release with :meth:`let_go`); False when
        another thread kept it for all of ``timeout``."""
        if self._pid != os.getpid():
            self.after_fork()
        return self._lock.acquire(timeout=min(max(timeout, 0.0), _LONGEST_WAIT))

    def let_go(self) -> None:
        """End what :meth:`hold` began."""
        self._lock.release()

    def _connection(self, deadline: float) -> _C:
        conn = self.conn
        if conn is not None and not self.driver.usable(conn):
            self.drop()
            conn = None
        if conn is None:
            conn = self.conn = self.driver.open(deadline)
        self.driver.arm(conn, deadline)
        return conn

    def drop(self) -> None:
        """Forget the connection, closing it if it is this process's own."""
        conn, self.conn = self.conn, None
        if self.on_drop is not None:
            self.on_drop()
        if conn is not None and self._pid == os.getpid():
            self.driver.close(conn)

    def close(self) -> None:
        """Close this process's connection; a call in progress closes it itself when it returns."""
        if self._pid != os.getpid():
            return
        if self._lock.acquire(timeout=_CLOSE_WAIT):
            try:
                self.drop()
            finally:
                self._lock.release()
        else:
            self._close_requested = True

    def after_fork(self) -> None:
        """In a child, where only the forking thread survives: a lock another thread held in the
        parent would stay locked forever, and the parent's connection is not ours to touch."""
        if self.conn is not None:
            _INHERITED.append(self.conn)
        self.drop()  # closes nothing: ``_pid`` is still the parent's
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._close_requested = False


def session_for(driver: Driver[_C], settings: Settings) -> Session[_C]:
    """A session for ``driver`` that names ``settings``' server in errors and hides its secrets."""
    return Session(driver, url=settings.redacted_url, where=settings.where, secrets=settings.secrets())


#: Connections inherited over fork(): kept referenced and unused, so no finaliser in the child
#: closes (or says goodbye on) a connection that belongs to the parent.
_INHERITED: list[object] = []
_LIVE: weakref.WeakSet[Session[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for session in list(_LIVE):
        session.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
