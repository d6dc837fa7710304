"""The zygote: a process prepared once, which forks each worker in about a millisecond.

A spawned worker boots a fresh interpreter (a quarter of a second here, seconds on a loaded
host), which is why each target used to keep warm workers waiting. The supervisor instead
spawns one zygote at start; it imports the runtime, freezes its heap (``gc.freeze()``, so the
forks share its pages) and then forks a worker whenever the supervisor asks.

What crosses to a worker, and what does not:

- the target travels as dill bytes and is loaded in the forked worker, not in the zygote, so a
  module the target imports (and whatever that import starts: threads, connections) exists
  only in that worker; the zygote holds what spawning it imported: gomaster and, as for every
  spawned process, the main module without its ``__main__`` block. Asked to ``preload``, the
  zygote loads every target once at boot instead, so a target slow to load (one that imports
  a large application) starts at once; what that import opens is then shared by every worker;
- the zygote has one thread and no driver connection, so a fork copies neither;
- each worker gets a socket of its own to the supervisor, and the supervisor a pidfd for it,
  both passed over the zygote's socket (SCM_RIGHTS): the pidfd is opened while the zygote, its
  parent, has not reaped it, so it names that worker and no recycled PID.

The death chain: the zygote dies with the supervisor (parent-death SIGKILL, checked after it is
armed, and EOF on its socket); a worker dies with the zygote (its own parent-death signal, on
which it kills its tree) and with the supervisor (EOF on its socket). A zygote that dies, or
does not answer a fork within :data:`FORK_TIMEOUT`, is killed and replaced; its workers end with
it, and the supervisor restarts their targets on the new one while it is still master.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import select
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

import dill
from multiprocess.connection import Connection
from multiprocess.connection import wait as wait_ready
from multiprocess.reduction import recvfds, sendfds

from gomaster.core.events import Elected
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.tree import die_with_parent
from gomaster.runtime.worker import EXIT_ORPHANED, WorkerSpec, forked_worker_main

#: A fork request gets this long for its answer before the zygote counts as frozen.
FORK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ZygoteReady:
    """The zygote has booted and forks on request."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Fork a worker for ``spec``; its target is ``target``, as dill bytes. ``elected``, when
    given, is the tenure the worker starts at once (else it waits for one on its socket)."""

    spec: WorkerSpec
    target: bytes
    elected: Elected | None = None


@dataclass(frozen=True, slots=True)
class Forked:
    """A worker was forked (its socket and pidfd follow), or ``error`` says why not."""

    pid: int
    error: str = ""


class ForkedWorker:
    """A worker the zygote forked, as the supervisor sees it: the subset of a ``multiprocess``
    process it uses, read from a pidfd (the supervisor is not its parent and cannot wait for it).

    Its exit status comes from the worker itself, as its last message (:meth:`exited`); a worker
    that died without one (killed) counts as killed by SIGKILL.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.sentinel = pidfd
        self._code: int | None = None
        self._gone = False

    def exited(self, code: int) -> None:
        """The worker said it exits with ``code`` (negative: the signal it dies by)."""
        self._code = code

    def is_alive(self) -> bool:
        """False once the pidfd says the process has ended."""
        return not self.join(0)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` for the process to end; True when it has."""
        if not self._gone:
            waiting = select.poll()  # not select(): a busy process's pidfd may be above 1023
            waiting.register(self.sentinel, select.POLLIN)
            self._gone = bool(waiting.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))
        return self._gone

    @property
    def exitcode(self) -> int | None:
        """None while it runs; then its code, as ``multiprocess`` gives it."""
        if not self.join(0):
            return None
        return self._code if self._code is not None else -signal.SIGKILL

    def close(self) -> None:
        """Close the pidfd; the object is of no use after."""
        with contextlib.suppress(OSError):
            os.close(self.sentinel)


class Zygote:
    """The supervisor's handle on its zygote process: start it, fork from it, replace it."""

    def __init__(self, context: Any, lease: SharedLease, preload: dict[int, bytes] | None = None) -> None:
        self._context = context
        self._lease = lease
        self._preload = preload or {}
        self.process: Any = None
        self.conn: Any = None
        self.ready = False

    def start(self) -> None:
        """Spawn the zygote; it is ``ready`` once :meth:`on_message` saw it say so."""
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=zygote_main,
            args=(theirs, self._lease, os.getpid(), self._preload),
            name="gomaster-zygote",
        )
        process.start()
        theirs.close()
        self.process, self.conn, self.ready = process, ours, False

    def on_message(self) -> None:
        """Read what the zygote sent while no fork was asked of it (only ``ZygoteReady``); a
        zygote that closed its end is stopped, to be started again."""
        try:
            while self.conn.poll():
                if isinstance(self.conn.recv(), ZygoteReady):
                    self.ready = True
        except (EOFError, OSError):
            self.stop()

    def alive(self) -> bool:
        """True while the zygote process runs."""
        return self.process is not None and self.process.is_alive()

    def fork(
        self, spec: WorkerSpec, target: bytes, elected: Elected | None = None
    ) -> tuple[ForkedWorker, Any] | str:
        """A new worker and the supervisor's end of its socket, or why there is none (the zygote
        is then stopped: the caller starts another)."""
        if not self.ready:
            return "the zygote is not ready"
        try:
            self.conn.send(Fork(spec, target, elected))
            if not self.conn.poll(FORK_TIMEOUT):
                self.stop()
                return f"the zygote did not answer a fork within {FORK_TIMEOUT:.1f} s"
            answer = self.conn.recv()
            if not isinstance(answer, Forked):
                raise OSError(f"unexpected answer {answer!r}")
            if answer.error:
                return f"the zygote could not fork: {answer.error}"
            with socket.socket(fileno=os.dup(self.conn.fileno())) as raw:
                end, pidfd = recvfds(raw, 2)
        except (EOFError, OSError, RuntimeError) as exc:
            self.stop()
            return f"the zygote is gone: {type(exc).__name__}: {exc}"
        return ForkedWorker(answer.pid, pidfd), Connection(end)

    def stop(self) -> None:
        """End the zygote (its idle state is worthless: SIGKILL), and with it every worker it
        forked that still runs."""
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
        if self.process is not None:
            with contextlib.suppress(OSError, ValueError):
                self.process.kill()
                self.process.join(1.0)
        self.process, self.conn, self.ready = None, None, False


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _fork(conn: Any, request: Fork, lease: SharedLease, loaded: dict[int, Any], own: tuple[int, ...]) -> None:
    """Fork one worker and hand its socket and pidfd to the supervisor; ``own`` are the
    zygote's descriptors, which the worker closes."""
    spec = dataclasses.replace(request.spec, supervisor_pid=os.getpid())
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError as exc:
        ours.close()
        theirs.close()
        conn.send(Forked(0, f"{type(exc).__name__}: {exc}"))
        return
    if pid == 0:  # pragma: no cover - the worker; it never returns
        try:
            conn.close()
            ours.close()
            signal.set_wakeup_fd(-1)
            for fd in own:
                os.close(fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the heap stays frozen: pages stay shared
            target = loaded.get(spec.index, request.target)
            forked_worker_main(Connection(theirs.detach()), spec, lease, target, request.elected)
        finally:
            os._exit(EXIT_ORPHANED)
    theirs.close()
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    pidfd = os.pidfd_open(pid)
    try:
        conn.send(Forked(pid))
        with socket.socket(fileno=os.dup(conn.fileno())) as raw:
            sendfds(raw, [ours.fileno(), pidfd])
    finally:
        ours.close()
        os.close(pidfd)


def zygote_main(conn: Any, lease: SharedLease, supervisor_pid: int, preload: dict[int, bytes]) -> None:
    """Entry point of the zygote process (spawned by the supervisor); ``preload`` maps a slot
    to the target to load now rather than in each worker."""
    hold_standard_fds()
    # A signal to the supervisor's process group (Ctrl-C, a service manager) is the supervisor's
    # to act on: the zygote ends with it. Workers inherit the ignoring until they arm.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != supervisor_pid:
        os._exit(EXIT_ORPHANED)
    loaded = {index: dill.loads(target) for index, target in preload.items()}
    wake_r, wake_w = os.pipe()
    for end in (wake_r, wake_w):
        os.set_blocking(end, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the loop: it sleeps until then
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    gc.collect()
    gc.freeze()
    conn.send(ZygoteReady())
    while True:
        ready = wait_ready([conn, wake_r])
        with contextlib.suppress(OSError):
            os.read(wake_r, 4096)
        _reap()
        try:
            request = conn.recv() if conn in ready else None
        except (EOFError, OSError):
            break
        if isinstance(request, Fork):
            try:
                _fork(conn, request, lease, loaded, (wake_r, wake_w))
            except OSError:
                break
    sys.stdout.flush()
    os._exit(0)
