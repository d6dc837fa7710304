"""The zygote: a process prepared once, which forks each worker in about a millisecond.

A spawned worker boots a fresh interpreter (a quarter of a second here, seconds on a loaded
host), which is why each target used to keep warm workers waiting. The supervisor instead
starts one zygote at start; it imports the runtime, freezes its heap (``gc.freeze()``, so the
forks share its pages) and then forks a worker whenever the supervisor asks.

The zygote is a fresh interpreter (``sys.executable -c``, not a ``multiprocess`` spawn), given
the supervisor's ``sys.path`` and ``sys.argv`` and three descriptors: its boot record, its socket
to the supervisor and the lease's memory. It holds gomaster (the runtime and ``dill``) and what
``preload`` loads, and nothing else: the supervisor's main module is never imported into it, so
its size does not depend on the application that started the node (a ``multiprocess`` spawn
re-imported that module, and everything it imports, into the zygote). A target defined in that
main module still works: ``dill`` carries such a function or class by value. No
``multiprocess`` resource tracker process is started for it either.

What crosses to a worker, and what does not:

- the target travels as dill bytes and is loaded in the target's process once the worker has
  forked it, neither in the zygote nor in the worker, so a module the target imports (and
  whatever that import starts: threads, connections) exists only in that process. Asked to
  ``preload``, the zygote loads every target once at boot instead, so a target slow to load
  (one that imports a large application) starts at once; what that import opens is then
  shared by every worker;
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
import json
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import dill
from multiprocess.connection import Connection
from multiprocess.connection import wait as wait_ready
from multiprocess.reduction import recvfds, sendfds
from multiprocess.util import _args_from_interpreter_flags as interpreter_flags

from gomaster.core.events import Elected
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.tree import die_with_parent
from gomaster.runtime.wire import receive, send
from gomaster.runtime.worker import EXIT_ORPHANED, WorkerSpec, forked_worker_main

#: A fork request gets this long for its answer before the zygote counts as frozen.
FORK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ZygoteReady:
    """The zygote has booted and forks on request."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Fork a worker for ``spec``; its target is ``target``, as dill bytes (unless preloaded, the
    target's process loads them). ``elected``, when
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


class ZygoteProcess:
    """The zygote process, as the supervisor sees it: the subset of a ``multiprocess`` process
    it uses. The supervisor is its parent, so its pidfd names it until the supervisor reaps it."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)

    def is_alive(self) -> bool:
        """False once it has ended (and is then reaped)."""
        return self._popen.poll() is None

    def kill(self) -> None:
        """SIGKILL it, through the pidfd: its PID cannot have been reused while unreaped."""
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` for it to end, and reap it."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def close(self) -> None:
        """Close the pidfd; the object is of no use after."""
        with contextlib.suppress(OSError):
            os.close(self.sentinel)


@dataclass(frozen=True, slots=True)
class ZygoteBoot:
    """What a starting zygote reads from the descriptor named on its command line."""

    supervisor_pid: int
    #: How many names' cells the lease holds (its memfd is passed as a descriptor).
    lease_names: int
    #: Slot -> dill bytes of each target to load at boot (``preload``); empty: none.
    preload: dict[int, bytes]
    #: The supervisor's ``sys.argv``, which a target may read, as a spawned process would.
    argv: list[str]


#: The zygote's command: a fresh interpreter given the supervisor's ``sys.path`` (so a target
#: finds the modules it names) that imports this module by name, never as ``__main__``.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from gomaster.runtime.zygote import main; main(sys.argv[2:])"
)


def _search_path() -> list[str]:
    """``sys.path`` as the zygote must see it: the current directory named, not ``''``."""
    here = os.getcwd()
    return [entry or here for entry in sys.path]


def _boot_file(boot: ZygoteBoot) -> int:
    """A memfd holding ``boot``, read from the start: the zygote may be slow to boot, and the
    supervisor must not block writing a large ``preload`` into a socket meanwhile."""
    fd = os.memfd_create("gomaster-zygote-boot")
    try:
        with open(fd, "wb", closefd=False) as out:
            pickle.dump(boot, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Zygote:
    """The supervisor's handle on its zygote process: start it, fork from it, replace it."""

    def __init__(self, lease: SharedLease, preload: dict[int, bytes] | None = None) -> None:
        self._lease = lease
        self._preload = preload or {}
        #: Typed loosely for the supervisor's loop, which reads it whenever ``conn`` is set.
        self.process: Any = None
        self.conn: Any = None
        self.ready = False
        #: Why the last start failed (the supervisor tries again later), or "".
        self.error = ""

    def start(self) -> None:
        """Start the zygote from a fresh interpreter: it holds gomaster and what ``preload``
        loads, never the supervisor's main module. It is ``ready`` once :meth:`on_message` saw
        it say so; when it cannot be started, it is not ``alive`` and ``error`` says why."""
        ours, theirs = socket.socketpair()
        boot = _boot_file(ZygoteBoot(os.getpid(), self._lease.size, self._preload, list(sys.argv)))
        passed = (boot, theirs.fileno(), self._lease.fileno())
        command = [sys.executable, *interpreter_flags(), "-c", _BOOT, json.dumps(_search_path())]
        try:
            popen = subprocess.Popen([*command, *map(str, passed)], pass_fds=passed)
        except OSError as exc:
            ours.close()
            self.error = f"cannot start the zygote: {exc}"
            return
        finally:
            theirs.close()
            os.close(boot)
        try:
            process = ZygoteProcess(popen)
        except OSError as exc:  # no pidfd (out of descriptors): a zygote we cannot watch is none
            popen.kill()
            popen.wait()
            ours.close()
            self.error = f"cannot watch the zygote: {exc}"
            return
        self.process, self.conn, self.ready, self.error = process, Connection(ours.detach()), False, ""

    def on_message(self) -> None:
        """Read what the zygote sent while no fork was asked of it (only ``ZygoteReady``); a
        zygote that closed its end is stopped, to be started again."""
        try:
            while self.conn.poll():
                if isinstance(receive(self.conn), ZygoteReady):
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
            send(self.conn, Fork(spec, target, elected))
            if not self.conn.poll(FORK_TIMEOUT):
                self.stop()
                return f"the zygote did not answer a fork within {FORK_TIMEOUT:.1f} s"
            answer = receive(self.conn)
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
            self.process.kill()
            self.process.join(1.0)
            self.process.close()
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
        send(conn, Forked(0, f"{type(exc).__name__}: {exc}"))
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
        except BaseException:
            # A worker that fails before it can report over its socket says why on stderr,
            # which it shares with the supervisor, rather than dying in silence.
            with contextlib.suppress(Exception):
                sys.stderr.write(f"gomaster worker {os.getpid()} failed to start:\n{traceback.format_exc()}")
                sys.stderr.flush()
        finally:
            os._exit(EXIT_ORPHANED)
    theirs.close()
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    pidfd = os.pidfd_open(pid)
    try:
        send(conn, Forked(pid))
        with socket.socket(fileno=os.dup(conn.fileno())) as raw:
            sendfds(raw, [ours.fileno(), pidfd])
    finally:
        ours.close()
        os.close(pidfd)


def main(argv: list[str]) -> None:
    """Entry point of the zygote process (see ``_BOOT``): ``argv`` names the descriptors of its
    :class:`ZygoteBoot`, of its socket to the supervisor and of the lease's memory."""
    hold_standard_fds()
    boot_fd, conn_fd, lease_fd = (int(word) for word in argv)
    with open(boot_fd, "rb") as source:
        boot: ZygoteBoot = pickle.load(source)
    # First of all, end with the supervisor: it may have died while this interpreter started.
    die_with_parent(signal.SIGKILL)
    if os.getppid() != boot.supervisor_pid:
        os._exit(EXIT_ORPHANED)
    lease = SharedLease.attach(lease_fd, boot.lease_names)
    os.close(lease_fd)
    os.set_inheritable(conn_fd, False)
    sys.argv[:] = boot.argv
    with contextlib.suppress(OSError):  # as in a spawned process: stdin is not the target's to read
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - kept open for ever
    zygote_main(Connection(conn_fd), lease, boot.preload)


def zygote_main(conn: Any, lease: SharedLease, preload: dict[int, bytes]) -> None:
    """The zygote's loop, once booted: ``preload`` maps a slot to the target to load now rather
    than in each target's process. Never returns."""
    # A signal to the supervisor's process group (Ctrl-C, a service manager) is the supervisor's
    # to act on: the zygote ends with it. Workers inherit the ignoring until they arm.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    loaded = {index: dill.loads(target) for index, target in preload.items()}
    wake_r, wake_w = os.pipe()
    for end in (wake_r, wake_w):
        os.set_blocking(end, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the loop: it sleeps until then
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    gc.collect()
    gc.freeze()
    send(conn, ZygoteReady())
    while True:
        ready = wait_ready([conn, wake_r])
        with contextlib.suppress(OSError):
            os.read(wake_r, 4096)
        _reap()
        try:
            request = receive(conn) if conn in ready else None
        except (EOFError, OSError):
            break
        if isinstance(request, Fork):
            try:
                _fork(conn, request, lease, loaded, (wake_r, wake_w))
            except OSError:
                break
    sys.stdout.flush()
    os._exit(0)
