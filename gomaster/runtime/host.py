"""The one supervisor process that every ``Master`` of an application shares, per backend.

The first ``Master`` started on a backend spawns a supervisor process; every later one (another
lock name) joins it, and the last one to stop ends it. The application keeps one pipe to it and
one thread that reads it; every message names the lock it is about. A lock name is started once
per process (:mod:`gomaster.runtime.names`): a second ``Master`` for a name already started is
refused before anything runs.

Process-wide state is unavoidable here, since sharing across ``Master`` objects that know
nothing of each other is the point: it is one registry (:class:`Hosts`), guarded by a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Hashable
from typing import Any, Protocol

import multiprocess

from gomaster.backends import LockBackend
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.hosted import MAX_MASTERS, supervisor_main
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.names import STARTED
from gomaster.runtime.protocol import (
    Answer,
    Failed,
    Join,
    Joined,
    Leave,
    Left,
    Logged,
    Member,
    Query,
    Ready,
    Resign,
    RoleChanged,
    Seen,
    Stop,
    ToMember,
    WorkStopped,
    relog,
)
from gomaster.runtime.status import Status

_log = logging.getLogger("gomaster")

#: How long a request to the supervisor (start, join, a query) waits for its answer.
ANSWER_TIMEOUT = 30.0
#: How long stopping waits for the reader thread to hand on the supervisor's last messages.
READER_LAST_WORDS = 1.0


class Listener(Protocol):
    """What a host tells one ``Master`` (on the host's reader thread)."""

    def heard(self, message: ToMember) -> None:
        """One message about this Master's name."""

    def host_gone(self) -> None:
        """The supervisor process has ended."""


class _Replies:
    """Answers awaited from the supervisor, by key, for the threads that wait for them."""

    def __init__(self) -> None:
        self._given: dict[Hashable, object] = {}
        self._changed = threading.Condition()
        self.closed = False

    def give(self, key: Hashable, value: object) -> None:
        with self._changed:
            self._given[key] = value
            self._changed.notify_all()

    def expect(self, key: Hashable) -> None:
        """An answer to ``key`` is asked for now: one given before (unasked) is not it."""
        with self._changed:
            self._given.pop(key, None)

    def close(self) -> None:
        """No answer will come any more: every wait ends."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def take(self, key: Hashable, timeout: float | None) -> tuple[bool, object]:
        """(True, the answer), or (False, None) when the host ended or ``timeout`` ran out."""
        with self._changed:
            self._changed.wait_for(lambda: key in self._given or self.closed, timeout)
            if key in self._given:
                return True, self._given.pop(key)
            return False, None


class Host:
    """The application's handle on one shared supervisor process: its pipe, the thread that
    reads it, and the Masters that use it, by lock name."""

    def __init__(self, backend: LockBackend, console: bool) -> None:
        self.backend = backend
        self._console = console
        self.members: dict[str, Listener] = {}
        self._conn: Any = None
        self._process: Any = None
        self._sending = threading.Lock()
        self._replies = _Replies()
        self._seq = 0
        self._reader: threading.Thread | None = None
        #: Every name's lease, shared with the supervisor: work in this process reads it.
        self.lease: SharedLease | None = None

    # -- the process and its reader ---------------------------------------------------------

    def start(self, first: Member, listener: Listener) -> int:
        """Spawn the supervisor process with ``first`` as its first name; returns once it runs,
        with the name's cell in :attr:`lease`."""
        self.members[first.name] = listener
        hold_standard_fds()  # its pipe must not land on a closed fd 0-2 of the application
        started = _Replies()
        self._reader = threading.Thread(
            target=self._own, args=(first, started), name="gomaster-master", daemon=True
        )
        self._reader.start()
        answered, value = started.take("started", ANSWER_TIMEOUT)
        if not answered and started.closed:
            raise RuntimeError(
                "the gomaster supervisor process ended while starting (its traceback is on stderr; "
                "a module run without an `if __name__ == '__main__':` guard does this)"
            )
        if not answered:
            self.kill()
            raise RuntimeError(f"the gomaster supervisor did not start within {ANSWER_TIMEOUT} s")
        if isinstance(value, BaseException):
            raise value
        assert isinstance(value, Ready)
        return value.cell

    def _own(self, first: Member, started: _Replies) -> None:
        """The long-lived thread that creates the supervisor (its parent-death signal follows
        this thread) and then reads everything the supervisor sends."""
        context = multiprocess.get_context("spawn")
        mine, theirs = context.Pipe()
        try:
            self.lease = SharedLease(MAX_MASTERS)
            process = context.Process(
                target=supervisor_main,
                args=(theirs, self.backend, first, self._console, os.getpid(), self.lease),
                name="gomaster-supervisor",
            )
            process.start()
        except Exception as exc:
            started.give("started", exc)
            return
        theirs.close()
        self._conn, self._process = mine, process
        while True:
            try:
                message = mine.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, Ready):
                started.give("started", message)
            else:
                self._dispatch(message)
        started.close()
        self._replies.close()
        for listener in list(self.members.values()):
            listener.host_gone()

    def _dispatch(self, message: object) -> None:
        match message:
            case Answer(seq=seq, status=status):
                self._replies.give(("answer", seq), status)
            case Joined(name=name) | Left(name=name):
                self._replies.give((type(message).__name__, name), message)
                listener = self.members.get(name)
                if listener is not None:
                    listener.heard(message)
            case RoleChanged(name=name) | Failed(name=name) | Seen(name=name):
                listener = self.members.get(name)
                if listener is not None:
                    listener.heard(message)
            case Logged():
                relog(message)
            case _:
                pass

    def alive(self) -> bool:
        """True while the supervisor process runs."""
        return self._process is not None and bool(self._process.is_alive())

    def _send(self, message: object) -> bool:
        with self._sending:
            if self._conn is None:
                return False
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                return False
            return True

    # -- what Masters ask ------------------------------------------------------------------------

    def join(self, member: Member, listener: Listener) -> int:
        """Add ``member``'s name to the running supervisor, returning its cell in :attr:`lease`;
        raises what it refused it with."""
        self.members[member.name] = listener
        key = ("Joined", member.name)
        self._replies.expect(key)
        if not self._send(Join(member)):
            self.members.pop(member.name, None)
            raise RuntimeError("the gomaster supervisor of this backend is gone")
        answered, value = self._replies.take(key, ANSWER_TIMEOUT)
        if not answered or not isinstance(value, Joined) or value.error:
            self.members.pop(member.name, None)
            why = value.error if isinstance(value, Joined) else "it did not answer"
            raise RuntimeError(f"lock name {member.name!r} could not join the gomaster supervisor: {why}")
        return value.cell

    def leave(self, name: str, timeout: float | None) -> bool:
        """Leave ``name``'s election; True once its hooks are gone and its release sent."""
        self._replies.expect(("Left", name))
        return self._send(Leave(name)) and self._replies.take(("Left", name), timeout)[0]

    def status(self, name: str) -> Status:
        """The supervisor's view of lock ``name``."""
        with self._sending:
            self._seq += 1
            seq = self._seq
        if not self.alive() or not self._send(Query(seq, name)):
            raise RuntimeError("this Master is not running: call start() first")
        answered, status = self._replies.take(("answer", seq), ANSWER_TIMEOUT)
        if not answered:
            if self.alive():
                raise TimeoutError(f"the supervisor did not answer within {ANSWER_TIMEOUT} s")
            raise RuntimeError("the supervisor stopped while answering")
        if not isinstance(status, Status):
            raise RuntimeError(f"this Master's lock {name!r} is not running: call start() first")
        return status

    def work_stopped(self, name: str, token: int) -> None:
        """The work of ``name``'s tenure ``token`` in this process has stopped."""
        self._send(WorkStopped(name, token))

    def resign(self, name: str) -> None:
        """Ask the supervisor to step ``name`` down."""
        self._send(Resign(name))

    def stop(self, timeout: float | None) -> None:
        """End the supervisor process (every name releases); kill it after ``timeout``."""
        if self._process is None:
            return
        self._send(Stop())
        self._process.join(timeout)
        if self._process.is_alive():
            _log.error("supervisor did not stop within %s s; killing it", timeout)
            self.kill()
        if self._reader is not None:
            self._reader.join(READER_LAST_WORDS)  # what the supervisor said last reaches its Master

    def kill(self) -> None:
        """SIGKILL the supervisor process (its workers die with it)."""
        if self._process is not None:
            with contextlib.suppress(OSError, ValueError):
                self._process.kill()
                self._process.join(1.0)


class Hosts:
    """Every shared supervisor of this process, one per backend, and the names they carry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: dict[tuple[type, str], Host] = {}

    def enter(
        self, backend: LockBackend, member: Member, listener: Listener, console: bool
    ) -> tuple[Host, SharedLease]:
        """Start ``member``'s name on the shared supervisor of ``backend``, spawning it if there is
        none; the host and the name's lease. A name already started in this process is refused
        with ``ValueError``."""
        key = (type(backend), backend.url)
        STARTED.take(backend.url, [member.name])
        try:
            with self._lock:
                host = self._hosts.get(key)
                if host is not None and host.alive():
                    cell = host.join(member, listener)
                else:
                    host = Host(backend, console)
                    cell = host.start(member, listener)
                    self._hosts[key] = host
                assert host.lease is not None
                return host, host.lease.at(cell)
        except BaseException:
            STARTED.give_back(backend.url, [member.name])
            raise

    def leave(self, host: Host, name: str, timeout: float | None) -> None:
        """Stop ``name`` on ``host``; the last name to leave ends the supervisor process."""
        key = (type(host.backend), host.backend.url)
        with self._lock:
            last = set(host.members) <= {name}
            if last and self._hosts.get(key) is host:
                del self._hosts[key]
        if last:
            host.stop(timeout)
        elif not host.leave(name, timeout) and host.alive():
            _log.error("lock name %r did not leave within %s s", name, timeout)
        with self._lock:
            host.members.pop(name, None)
        STARTED.give_back(host.backend.url, [name])


#: The registry of this process (see the module docstring for why there is one).
HOSTS = Hosts()
