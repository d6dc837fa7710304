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
import json
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
from typing import Any

from multiprocess.connection import Connection
from multiprocess.util import _args_from_interpreter_flags as interpreter_flags

from gomaster.core.events import Elected
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.wire import receive, receive_descriptors, send
from gomaster.runtime.worker import WorkerSpec
from gomaster.runtime.zygote_main import Fork, Forked, ZygoteBoot, ZygoteReady

#: A fork request gets this long for its answer before the zygote counts as frozen.
FORK_TIMEOUT = 2.0


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


#: The zygote's command: a fresh interpreter given the supervisor's ``sys.path`` (so a target
#: finds the modules it names) that imports this module by name, never as ``__main__``.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from gomaster.runtime.zygote_main import main; main(sys.argv[2:])"
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

    def __init__(
        self, lease: SharedLease, preload: dict[int, bytes] | None = None, modules: tuple[str, ...] = ()
    ) -> None:
        """``preload``: slot -> packed target to load at boot; ``modules``: to import at boot."""
        self._lease = lease
        self._preload = preload or {}
        self._modules = modules
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
        boot = _boot_file(
            ZygoteBoot(os.getpid(), self._lease.size, self._preload, list(sys.argv), self._modules)
        )
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
        self, spec: WorkerSpec | None, target: bytes = b"", elected: Elected | None = None
    ) -> tuple[ForkedWorker, Any] | str:
        """A new worker and the supervisor's end of its socket, or why there is none (the zygote
        is then stopped: the caller starts another). Without ``spec``, a spare (see ``Fork``)."""
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
            end, pidfd = receive_descriptors(self.conn, 2)
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


