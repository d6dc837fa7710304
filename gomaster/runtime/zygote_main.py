"""The zygote process itself: its boot, its loop, and each fork (:mod:`gomaster.runtime.zygote`
is the supervisor's handle on it, and says what the zygote is for).

Everything imported here is in every worker and every target's process, since they are forks
of it: a larger process takes longer to fork and runs more at-fork hooks. So this module, and
what it imports, keeps to the standard library's light modules and the runtime's own small
ones: no ``multiprocess``, no ``subprocess``, and ``dill`` only when a target travels by value
(see :mod:`gomaster.runtime.packing`): it is then imported once at boot, not at every start.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import select
import signal
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from gomaster.core.events import Elected
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.packing import unpack
from gomaster.runtime.tree import die_with_parent
from gomaster.runtime.wire import Channel, receive, send, send_descriptors
from gomaster.runtime.worker import EXIT_ORPHANED, WorkerSpec, forked_worker_main


@dataclass(frozen=True, slots=True)
class ZygoteReady:
    """The zygote has booted and forks on request."""


@dataclass(frozen=True, slots=True)
class Fork:
    """Fork a worker for ``spec``; its target is ``target``, packed (unless preloaded, the
    target's process loads it). ``elected``, when given, is the tenure the worker starts at
    once (else it waits for one on its socket). Without ``spec``, fork a spare, which waits for
    an ``Assign``."""

    spec: WorkerSpec | None
    target: bytes = b""
    elected: Elected | None = None


@dataclass(frozen=True, slots=True)
class Forked:
    """A worker was forked (its socket and pidfd follow), or ``error`` says why not."""

    pid: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class ZygoteBoot:
    """What a starting zygote reads from the descriptor named on its command line."""

    supervisor_pid: int
    #: How many names' cells the lease holds (its memfd is passed as a descriptor).
    lease_names: int
    #: Slot -> packed target to load at boot (``preload``); empty: none.
    preload: dict[int, bytes]
    #: The supervisor's ``sys.argv``, which a target may read, as a spawned process would.
    argv: list[str]
    #: Modules to import at boot because loading the targets needs them (``packing.modules_for``).
    modules: tuple[str, ...] = ()



def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _fork(conn: Any, request: Fork, lease: SharedLease, loaded: dict[int, Any], own: tuple[int, ...]) -> None:
    """Fork one worker and hand its socket and pidfd to the supervisor; ``own`` are the
    zygote's descriptors, which the worker closes."""
    zygote = os.getpid()
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
            end = Channel(theirs.detach())
            forked_worker_main(end, zygote, lease, loaded, request.spec, request.target, request.elected)
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
        send_descriptors(conn, [ours.fileno(), pidfd])
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
    for module in boot.modules:
        importlib.import_module(module)
    zygote_main(Channel(conn_fd), lease, boot.preload)


def zygote_main(conn: Any, lease: SharedLease, preload: dict[int, bytes]) -> None:
    """The zygote's loop, once booted: ``preload`` maps a slot to the target to load now rather
    than in each target's process. Never returns."""
    # A signal to the supervisor's process group (Ctrl-C, a service manager) is the supervisor's
    # to act on: the zygote ends with it. Workers inherit the ignoring until they arm.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    loaded = {index: unpack(target) for index, target in preload.items()}
    wake_r, wake_w = os.pipe()
    for end in (wake_r, wake_w):
        os.set_blocking(end, False)
    signal.set_wakeup_fd(wake_w)  # a child's exit wakes the loop: it sleeps until then
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    waiting = select.poll()
    for fd in (conn.fileno(), wake_r):
        waiting.register(fd, select.POLLIN)
    gc.collect()
    gc.freeze()
    send(conn, ZygoteReady())
    while True:
        waiting.poll()
        with contextlib.suppress(OSError):
            os.read(wake_r, 4096)
        _reap()
        try:
            request = receive(conn) if conn.poll(0) else None
        except (EOFError, OSError):
            break
        if isinstance(request, Fork):
            try:
                _fork(conn, request, lease, loaded, (wake_r, wake_w))
            except OSError:
                break
    sys.stdout.flush()
    os._exit(0)
