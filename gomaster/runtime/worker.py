"""A worker process: waits for ``Elected`` on its pipe, then runs one target in its own group.

The worker leads its own process group so that stopping it also stops everything the target
started. It never outlives its supervisor: the kernel sends it ``PDEATHSIG`` when the supervisor
dies, and a watchdog thread that sees the pipe close kills the whole group. The same thread
also stops the work when the published lease deadline passes, so a frozen or wedged supervisor
cannot leave master work running past its lease.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

from gomaster.core.events import Demoted, Elected, Shutdown, ToWorker
from gomaster.runtime.clock import boottime
from gomaster.runtime.lease import Leadership, SharedLease

Target: TypeAlias = Callable[[Leadership], object]

_PR_SET_PDEATHSIG = 1
#: The signal the kernel sends a worker whose supervisor thread died; its handler kills the group.
DEATH_SIGNAL = signal.SIGUSR2
#: How often the watchdog looks at the lease deadline once elected (an idle one just waits).
WATCH_INTERVAL = 0.02
#: Exit status of a worker whose target raised.
EXIT_TARGET_RAISED = 1
#: Exit status of a worker that stopped its own work because the lease deadline passed.
EXIT_DEADLINE = 70
#: Exit status of a worker that found its supervisor gone.
EXIT_ORPHANED = 71


# ---- messages from a worker to its supervisor -------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerLog:
    """A log record from the worker, re-emitted by the supervisor's ``logging``."""

    logger: str
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """The worker has booted (interpreter, imports, its target unpickled) and waits for ``Elected``."""


@dataclass(frozen=True, slots=True)
class TargetStarted:
    """The target of tenure ``token`` is running (taken just before the call)."""

    token: int


@dataclass(frozen=True, slots=True)
class TargetFailed:
    """The target of tenure ``token`` raised; ``error`` is the formatted traceback."""

    token: int
    error: str


FromWorker: TypeAlias = WorkerLog | WorkerReady | TargetStarted | TargetFailed


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs, sent once when it is spawned."""

    index: int
    label: str
    target: Target
    supervisor_pid: int
    grace: float
    log_level: int = logging.INFO
    watch_deadline: bool = True


class _PipeLogHandler(logging.Handler):
    """Sends log records up the pipe; the pipe is shared by threads, hence the lock."""

    def __init__(self, send: Callable[[FromWorker], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(WorkerLog(record.name, record.levelno, self.format(record)))
        except (OSError, ValueError):
            self.handleError(record)


def _kill_group(sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(0), sig)


def exit_ending_group(code: int) -> NoReturn:
    """Exit, first asking whatever the target left running in our group to stop too."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _kill_group(signal.SIGTERM)
    os._exit(code)


def _on_death_signal(_signum: int, _frame: object) -> None:
    _kill_group(signal.SIGKILL)


def _arm_parent_death(supervisor_pid: int) -> None:
    """Ask the kernel to signal us when the supervisor dies, then check it has not already."""
    signal.signal(DEATH_SIGNAL, _on_death_signal)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
    if os.getppid() != supervisor_pid:
        _kill_group(signal.SIGKILL)
        os._exit(EXIT_ORPHANED)


class _Watchdog:
    """The worker's one helper thread: reads the pipe, and ends the group when it must.

    It ends the group when the pipe closes (the supervisor is gone) and, while the target runs,
    when the published deadline of its tenure passes: SIGTERM at once, SIGKILL after ``grace``.
    """

    def __init__(self, conn: Any, lease: SharedLease, grace: float) -> None:
        self._conn = conn
        self._lease = lease
        self._grace = grace
        self._send_lock = threading.Lock()
        self.elected: Elected | None = None
        self.ended = threading.Event()
        self._started = threading.Event()
        self._token: int | None = None
        self._terminated_at: float | None = None

    def send(self, message: FromWorker) -> None:
        with self._send_lock:
            self._conn.send(message)

    def running(self, token: int) -> None:
        self._token = token

    def run(self) -> None:
        while True:
            # A warm worker waiting for ``Elected`` has no deadline to watch: it sleeps on the
            # pipe (which also wakes it when the supervisor dies) instead of waking 50 times a
            # second, so the idle workers of many followers cost no CPU.
            waiting = self.elected is None and not self.ended.is_set()
            try:
                if self._conn.poll(None if waiting else WATCH_INTERVAL):
                    self._handle(self._conn.recv())
            except (EOFError, OSError):
                _kill_group(signal.SIGKILL)
                os._exit(EXIT_ORPHANED)
            self._check_deadline()

    def _handle(self, message: ToWorker) -> None:
        match message:
            case Elected() as elected if self.elected is None:
                self.elected = elected
                self._started.set()
            case Demoted() | Shutdown():
                self.ended.set()
                self._started.set()
            case _:
                pass

    def wait_elected(self) -> Elected | None:
        self._started.wait()
        return self.elected if not self.ended.is_set() else None

    def _check_deadline(self) -> None:
        if self._token is None:
            return
        now = boottime()
        if self._terminated_at is None:
            if now >= self._lease.deadline_for(self._token):
                self._terminated_at = now
                _kill_group(signal.SIGTERM)
        elif now >= self._terminated_at + self._grace:
            _kill_group(signal.SIGKILL)


def worker_main(conn: Any, spec: WorkerSpec, lease: SharedLease) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _arm_parent_death(spec.supervisor_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watchdog = _Watchdog(conn, lease, spec.grace)
    root = logging.getLogger()
    root.handlers[:] = [_PipeLogHandler(watchdog.send)]
    root.setLevel(spec.log_level)
    threading.Thread(target=watchdog.run, name="gomaster-watchdog", daemon=True).start()
    with contextlib.suppress(OSError, ValueError):
        watchdog.send(WorkerReady())
    elected = watchdog.wait_elected()
    if elected is None:
        sys.exit(0)
    leadership = Leadership(elected.name, elected.node_id, elected.token, elected.since, lease)
    # Default SIGTERM ends the target on demotion unless it installs its own handler; SIGINT,
    # ignored while idle, is restored because ignored signals stay ignored across exec.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if spec.watch_deadline:
        watchdog.running(elected.token)
    watchdog.send(TargetStarted(elected.token))
    try:
        spec.target(leadership)
    except SystemExit as exc:
        exit_ending_group(exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1))
    except BaseException:
        watchdog.send(TargetFailed(elected.token, traceback.format_exc()))
        exit_ending_group(EXIT_TARGET_RAISED)
    exit_ending_group(0)
