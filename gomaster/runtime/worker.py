"""A worker process: the keeper of one tenure's process tree (docs/concepts.md, "Containment").

Forked by the zygote (:mod:`gomaster.runtime.zygote`) when a tenure needs it, it waits for
``Elected`` (usually already sent) and forks the target's process, which loads the target and
runs it. The worker itself runs no user code, not even the target's imports. A child
subreaper, it ends the whole tree below it when the tenure ends (stopped by the supervisor, the
published deadline passed, the target exited: SIGTERM, then SIGKILL at ``grace`` or on
``KILL_NOW_SIGNAL``; the zygote or the supervisor gone: SIGKILL at once). It exits only once
nothing is left below it, as the target did, and says so first (the supervisor is not its
parent). Running no user code is what lets it reap with ``waitpid(-1)``: in the target's
process that would steal the statuses ``subprocess`` waits for.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import resource
import select
import signal
import struct
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

from gomaster.core.events import Demoted, Elected, Shutdown
from gomaster.runtime.clock import boottime
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.packing import unpack
from gomaster.runtime.tree import become_subreaper, die_with_parent, kill_tree, reap, signal_tree
from gomaster.runtime.wire import Channel, packed, receive, send

Target: TypeAlias = Callable[[Leadership], object]

#: The signal the kernel sends a worker whose supervisor thread died: it kills its tree.
DEATH_SIGNAL = signal.SIGUSR2
#: The supervisor's word that grace has run out: the worker kills its tree at once.
KILL_NOW_SIGNAL = signal.SIGUSR1
#: How often the worker looks at a stopping tree.
WATCH_INTERVAL = 0.02
#: The longest the worker sleeps during a tenure: it wakes at the lease's deadline, and at
#: least this often, since its sleep does not count a suspend (deadlines are CLOCK_BOOTTIME).
LEASE_WATCH_MAX = 0.25
#: Exit status of a worker whose target raised.
EXIT_TARGET_RAISED = 1
#: Exit status of a worker that found its supervisor gone.
EXIT_ORPHANED = 71
#: A relayed message larger than this means the target's stream is garbled (a forked child of
#: the target wrote into it too); the worker then stops relaying rather than buffer without end.
RELAY_FRAME_MAX = 64 * 1024 * 1024
_READ_CHUNK = 65536
#: The C function behind ``signal.signal``. The public wrapper turns the handler it replaces into
#: an enum, which for a Python handler means raising and catching a ValueError whose message
#: formats that handler: in the target's process, just forked, 0.2 ms of every start.
_set_handler: Callable[[int, int], object] = getattr(signal.signal, "__wrapped__", signal.signal)


# ---- messages from a worker to its supervisor -------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerLog:
    """A log record from the worker, re-emitted by the supervisor's ``logging``."""

    logger: str
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """The worker has booted and waits for ``Elected`` (its target is loaded only once forked)."""


@dataclass(frozen=True, slots=True)
class TargetStarted:
    """The target of tenure ``token`` is running: sent by the target's process once it has
    loaded the target, just before the call."""

    token: int


@dataclass(frozen=True, slots=True)
class TargetFailed:
    """The target of tenure ``token`` raised, or could not be loaded; ``error`` says which, with
    the formatted traceback."""

    token: int
    error: str


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """The worker's last word: it exits with ``code`` (negative: dies by that signal), for a
    supervisor that is not its parent and cannot wait for it."""

    code: int


FromWorker: TypeAlias = WorkerLog | WorkerReady | TargetStarted | TargetFailed | WorkerExit


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs of its slot but the target (which travels apart, see the
    zygote)."""

    index: int
    label: str
    grace: float
    log_level: int = logging.INFO
    watch_deadline: bool = True
    #: Which name's cell of the supervisor's :class:`SharedLease` this worker's tenure reads.
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Assign:
    """A tenure for a spare worker (one forked before anyone knew which name it would serve):
    its slot, that slot's packed target (a target the zygote preloaded is taken from the
    zygote's copy instead) and the ``Elected`` it starts with."""

    spec: WorkerSpec
    target: bytes
    elected: Elected


class _PipeLogHandler(logging.Handler):
    """Sends log records up a pipe, to be re-emitted by the supervisor."""

    def __init__(self, send: Callable[[FromWorker], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(WorkerLog(record.name, record.levelno, self.format(record)))
        except (OSError, ValueError):
            self.handleError(record)


class _Frames:
    """Cuts a byte stream into ``multiprocess`` connection messages without blocking on a part.

    The worker relays its target's messages as they come; a target killed halfway through a
    message leaves a part that must be dropped, never waited for.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes] | None:
        """The whole messages ``data`` completes, or None when the stream makes no sense."""
        self._buffer += data
        whole: list[bytes] = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack("!i", self._buffer[:4])
            start = 4
            if size == -1:
                if len(self._buffer) < 12:
                    break
                (size,) = struct.unpack("!Q", self._buffer[4:12])
                start = 12
            if size < 0 or size > RELAY_FRAME_MAX:
                return None
            if len(self._buffer) < start + size:
                break
            whole.append(bytes(self._buffer[start : start + size]))
            del self._buffer[: start + size]
        return whole


def _log_to(handler: logging.Handler, level: int) -> None:
    """Route this process's log records to ``handler`` (up to the supervisor), from ``level`` up.
    A level already set is left alone: setting one clears every logger's cache."""
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if root.level != level:
        root.setLevel(level)


def exit_code(status: int | None) -> int:
    """A wait status as ``multiprocess`` words an exit code: negative for a signal; a target
    that never ran (None) counts as one that raised."""
    if status is None:
        return EXIT_TARGET_RAISED
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)


def _exit_like(status: int | None) -> NoReturn:
    """Exit as the target did: its exit code, or death by the signal that killed it."""
    if status is None:
        os._exit(EXIT_TARGET_RAISED)
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    os._exit(128 + sig)


class _Keeper:
    """The worker's one loop: waits for its tenure, forks the target, and ends the tree.

    ``parent`` is the zygote, whose death ends the worker. ``leases`` is the supervisor's whole
    shared lease and ``loaded`` the targets the zygote preloaded: a spare learns which slot it
    serves only when assigned (:meth:`wait_assigned`)."""

    def __init__(self, conn: Any, parent: int, leases: SharedLease, loaded: dict[int, Target]) -> None:
        self._conn = conn
        self._parent = parent
        self._leases = leases
        self._loaded = loaded
        self._spec = WorkerSpec(index=-1, label="", grace=0.0)
        #: The target, as packed bytes until its own process loads it (or loaded: preloaded).
        self._work: Target | bytes = b""
        self._lease = leases
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._signals: set[int] = set()
        self._token = 0
        self._target: int | None = None
        self._target_fd: int | None = None
        self._target_status: int | None = None
        self._relay: int | None = None
        self._frames = _Frames()
        self._ending_since: float | None = None

    # -- setup and plumbing ---------------------------------------------------------------

    def arm(self) -> None:
        """Route signals to the loop, and die with the zygote (checked after arming)."""
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, DEATH_SIGNAL, KILL_NOW_SIGNAL):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        die_with_parent(DEATH_SIGNAL)
        if os.getppid() != self._parent:
            self._orphaned()

    def assign(self, spec: WorkerSpec, target: bytes) -> None:
        """Serve ``spec``'s slot with ``target`` (the zygote's preloaded copy when it has one)."""
        self._spec = spec
        self._lease = self._leases.at(spec.lease)
        self._work = self._loaded.get(spec.index, target)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.add(signum)

    def send(self, message: FromWorker) -> None:
        """Send one message to the supervisor (the worker has one thread: no lock needed)."""
        send(self._conn, message)

    def _wait(self, timeout: float | None) -> set[int]:
        poller = select.poll()
        watched = [self._conn.fileno(), self._wake_r, self._target_fd, self._relay]
        for fd in watched:
            if fd is not None:
                poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1))
        with contextlib.suppress(OSError):
            os.read(self._wake_r, 4096)
        return {fd for fd, _ in ready}

    def _receive(self) -> object:
        try:
            return receive(self._conn)
        except (EOFError, OSError):
            self._orphaned()

    def _orphaned(self) -> NoReturn:
        """The supervisor is gone: nothing of this tenure may outlive it."""
        kill_tree(self._on_reaped)
        os._exit(EXIT_ORPHANED)

    def _on_reaped(self, pid: int, status: int) -> None:
        if pid == self._target:
            self._target_status = status

    # -- before the tenure ----------------------------------------------------------------

    def rehearse(self) -> None:
        """Run, once and for nothing, what an assignment runs before the target's fork: reading
        an ``Assign`` and framing ``TargetStarted``. A fork shares the zygote's pages until one
        side writes, so the first run of any code copies every page its objects live on, about a
        tenth of a millisecond per hundred: a spare pays for that while it waits, not while
        the election waits for it."""
        elected = Elected(name="", node_id="", token=0, since=0.0, deadline=0.0)
        pickle.loads(pickle.dumps(Assign(self._spec, b"", elected), protocol=pickle.HIGHEST_PROTOCOL))
        packed(TargetStarted(0))

    def wait_assigned(self) -> Elected | None:
        """Sleep on the socket until this worker has a tenure: an ``Assign`` (a spare), or an
        ``Elected`` for the slot it was forked for; None when told to stop first."""
        while True:
            ready = self._wait(None)
            if DEATH_SIGNAL in self._signals:
                self._orphaned()
            if self._signals & {signal.SIGTERM, KILL_NOW_SIGNAL}:
                return None
            if self._conn.fileno() in ready:
                match self._receive():
                    case Assign(spec=spec, target=target, elected=elected):
                        self.assign(spec, target)
                        return elected
                    case Elected() as elected:
                        return elected
                    case Demoted() | Shutdown():
                        return None
                    case _:
                        pass

    # -- the tenure -----------------------------------------------------------------------

    def run_tenure(self, elected: Elected) -> NoReturn:
        """Fork the target, then keep its tree until the tenure ends; exits as the target did.

        What the target's process needs is made here, before the fork (its log handler, its
        ``TargetStarted`` message): a process just forked pays for every page it first writes,
        and the target waits for all of it. The keeper's own setup runs after the fork, beside
        the target's start on another core."""
        self._token = elected.token
        relay_r, relay_w = os.pipe()
        keeper = os.getpid()
        relay = Channel(relay_w)
        handler = _PipeLogHandler(functools.partial(send, relay))
        started = packed(TargetStarted(elected.token))
        if logging.getLogger().level != self._spec.log_level:
            logging.getLogger().setLevel(self._spec.log_level)
        try:
            child = os.fork()
        except OSError as exc:
            self.send(TargetFailed(elected.token, f"cannot fork the target: {exc}"))
            self.leave(None)
        if child == 0:
            self._run_target(elected, keeper, relay_r, relay, handler, started)
        _log_to(_PipeLogHandler(self.send), self._spec.log_level)
        relay.close()
        os.set_blocking(relay_r, False)
        self._relay = relay_r
        self._target = child
        self._target_fd = os.pidfd_open(child)
        while True:
            ready = self._wait(self._next_wake())
            if DEATH_SIGNAL in self._signals:
                self._orphaned()
            if self._relay is not None and self._relay in ready:
                self._pump_relay()
            if self._conn.fileno() in ready and isinstance(self._receive(), Demoted | Shutdown):
                self._begin_end()
            if signal.SIGTERM in self._signals:
                self._begin_end()
            if self._target_fd is not None and self._target_fd in ready:
                os.close(self._target_fd)
                self._target_fd = None
                self._begin_end()
            if self._spec.watch_deadline and boottime() >= self._lease.deadline_for(self._token):
                self._begin_end()
            if KILL_NOW_SIGNAL in self._signals:
                self._finish()
            if self._ending_since is not None and (
                not reap(self._on_reaped) or boottime() >= self._ending_since + self._spec.grace
            ):
                self._finish()

    def _next_wake(self) -> float:
        """Seconds to sleep: briefly while the tree stops; else until the lease's deadline as
        published now (a renewal moves it on: the worker then sleeps again)."""
        if self._ending_since is not None:
            return WATCH_INTERVAL
        if not self._spec.watch_deadline:
            return 1.0
        left = self._lease.deadline_for(self._token) - boottime()
        return min(max(left, 0.0), LEASE_WATCH_MAX)

    def _begin_end(self) -> None:
        """The tenure is over: ask every process below to stop (SIGKILL follows at grace)."""
        if self._ending_since is None:
            self._ending_since = boottime()
            signal_tree(signal.SIGTERM)

    def _finish(self) -> NoReturn:
        kill_tree(self._on_reaped)
        self._pump_relay()
        self.leave(self._target_status)

    def leave(self, status: int | None) -> NoReturn:
        """Say how this worker exits, then exit so (see :func:`exit_code`)."""
        with contextlib.suppress(OSError, ValueError):
            self.send(WorkerExit(exit_code(status)))
        _exit_like(status)

    def _pump_relay(self) -> None:
        """Forward the target's whole messages to the supervisor, as raw bytes."""
        while self._relay is not None:
            try:
                data = os.read(self._relay, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            frames = self._frames.feed(data) if data else []
            if not data or frames is None:
                os.close(self._relay)
                self._relay = None
                if frames is None:
                    note = "garbled messages from the target: no longer relayed"
                    self.send(WorkerLog("gomaster", logging.WARNING, note))
                return
            for frame in frames:
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(frame)

    def _run_target(
        self,
        elected: Elected,
        keeper: int,
        relay_r: int,
        relay: Channel,
        handler: logging.Handler,
        started: bytes,
    ) -> NoReturn:
        """In the forked child: become the target's process and run it; never returns. The
        keeper made ``relay`` (to it), the log ``handler`` and ``started`` (the framed
        ``TargetStarted``) before the fork."""
        code = EXIT_TARGET_RAISED
        try:
            die_with_parent(signal.SIGKILL)
            if os.getppid() != keeper:
                os._exit(EXIT_ORPHANED)
            signal.set_wakeup_fd(-1)
            # Default SIGTERM ends the target unless it installs its own handler; SIGINT, ignored
            # while idle, is restored because ignored signals stay ignored across exec.
            for sig in (signal.SIGTERM, signal.SIGINT, DEATH_SIGNAL, KILL_NOW_SIGNAL):
                _set_handler(sig, signal.SIG_DFL)
            for fd in (relay_r, self._wake_r, self._wake_w):
                os.close(fd)
            self._conn.close()
            _log_to(handler, self._spec.log_level)
            leadership = Leadership(elected.name, elected.node_id, elected.token, elected.since, self._lease)
            try:
                work = unpack(self._work) if isinstance(self._work, bytes) else self._work
            except Exception:
                send(relay, TargetFailed(elected.token, f"cannot load the target:\n{traceback.format_exc()}"))
            else:
                relay.write(started)
                try:
                    running = work(leadership)
                    if isinstance(running, Awaitable):
                        _drive(running)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    send(relay, TargetFailed(elected.token, traceback.format_exc()))
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _drive(awaitable: Awaitable[object]) -> None:
    """Run a target's awaitable (an ``async def`` target, or a callable returning one) in an
    event loop of its own. SIGTERM, the end of the tenure, cancels it at once; once it has
    finished cancelling, the process dies by SIGTERM as a sync target does (the worker SIGKILLs
    whatever is left at ``grace``). asyncio is imported here, by the targets that need it only."""
    import asyncio

    ended = False

    async def run() -> None:
        task = asyncio.ensure_future(awaitable)

        def end() -> None:
            nonlocal ended
            ended = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, end)
        try:
            await task
        except asyncio.CancelledError:
            if not ended:
                raise

    asyncio.run(run())
    if ended:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def forked_worker_main(
    conn: Any,
    parent: int,
    leases: SharedLease,
    loaded: dict[int, Target],
    spec: WorkerSpec | None,
    target: bytes = b"",
    elected: Elected | None = None,
) -> NoReturn:
    """Entry point of a worker the zygote (``parent``) forked for ``spec``'s slot; with
    ``elected`` its tenure starts at once, else it says :class:`WorkerReady` and waits for one.
    Without ``spec`` it is a spare: it waits in silence for an :class:`Assign` (the supervisor
    keeps one ready, so that an election pays for one fork rather than two). Never returns.

    Its target comes packed (or loaded already, when the zygote preloads it) and is loaded only
    in the target's own process, once forked: what the target imports, and what that import
    starts, never enters the keeper, which stays as small as the zygote left it. A target that
    cannot be loaded fails like one that raised, its traceback reported.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    become_subreaper()
    keeper = _Keeper(conn, parent, leases, loaded)
    keeper.arm()
    if spec is not None:
        keeper.assign(spec, target)
    if elected is None:
        if spec is not None:
            with contextlib.suppress(OSError, ValueError):
                keeper.send(WorkerReady())
        else:
            keeper.rehearse()
        elected = keeper.wait_assigned()
    if elected is None:
        keeper.leave(0)
    keeper.run_tenure(elected)
