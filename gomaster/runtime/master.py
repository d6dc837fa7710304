"""``Master``: go-master's API (start/stop/is_master/id/status) over a supervisor process.

The application process keeps only a pipe to the supervisor. The supervisor runs the election
and the hooks in worker processes, so nothing the hooks do can stall the heartbeat, and it dies
with the application (parent-death signal and pipe EOF), releasing the lock as it goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import multiprocess

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted, Elected
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from gomaster.runtime.console import announce_holder, chain, console_logging, logging_configured
from gomaster.runtime.elector import HolderChanged, RenewOutcome, RoleChanged
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.lease import Leadership
from gomaster.runtime.status import Status
from gomaster.runtime.supervise import check_config, check_targets, new_identity, watcher
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions
from gomaster.runtime.tree import die_with_parent

if TYPE_CHECKING:
    from gomaster.runtime.metrics import Metrics

_log = logging.getLogger("gomaster")
#: How long ``is_master()``/``status()`` wait for the supervisor's answer.
QUERY_TIMEOUT = 5.0
#: How long ``start()`` waits for the supervisor process to come up.
START_TIMEOUT = 30.0

Hook: TypeAlias = Callable[[], object]


class HookError(Exception):
    """A start or stop hook raised, exited or was killed; the election carried on."""


# ---- control messages between the application and its supervisor -----------------------


@dataclass(frozen=True, slots=True)
class _Query:
    seq: int


@dataclass(frozen=True, slots=True)
class _Answer:
    seq: int
    status: Status


@dataclass(frozen=True, slots=True)
class _Resign:
    pass


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


@dataclass(frozen=True, slots=True)
class _Ready:
    pid: int


@dataclass(frozen=True, slots=True)
class _RoleChanged:
    is_master: bool
    token: int


@dataclass(frozen=True, slots=True)
class _Failed:
    text: str


def _run_start_hook(hook: Hook) -> Callable[[Leadership], object]:
    def start(_leadership: Leadership) -> object:
        return hook()

    return start


@dataclass(frozen=True, slots=True, kw_only=True)
class _Spec:
    """What the supervisor process needs to know beyond its hooks and backend."""

    name: str
    node_id: str
    timing: Timing
    version: str
    #: Log elections to stderr: decided in the application process, whose logging it is (the
    #: spawned supervisor starts with none, whatever the application set up).
    console: bool


def _supervisor_main(
    conn: Any,
    hooks: tuple[Hook | None, Hook | None],
    backend: LockBackend,
    spec: _Spec,
) -> None:
    """Entry point of the supervisor process that ``Master.start()`` spawns."""
    die_with_parent(signal.SIGTERM)
    with console_logging(spec.console):
        _supervise_hooks(conn, hooks, backend, spec)


def _supervise_hooks(
    conn: Any, hooks: tuple[Hook | None, Hook | None], backend: LockBackend, spec: _Spec
) -> None:
    """Run the election and the hooks, answering the application over ``conn`` until stopped."""
    name, node_id, timing, version = spec.name, spec.node_id, spec.timing, spec.version
    lock = threading.Lock()

    def send(message: object) -> None:
        with lock, contextlib.suppress(OSError, BrokenPipeError, ValueError):
            conn.send(message)

    def on_event(event: Announcement) -> None:
        if isinstance(event, Elected | Demoted):
            send(_RoleChanged(isinstance(event, Elected), event.token))

    start_hook, stop_hook = hooks
    job = Job(
        config=Config(name=name, me=new_identity(version, node_id), timing=timing),
        targets=[_run_start_hook(start_hook)] if start_hook is not None else [],
        labels=["start_hook"],
        stop_hook=_run_start_hook(stop_hook) if stop_hook is not None else None,
        on_event=on_event,
        watch=chain(send, announce_holder(node_id)),
    )
    options = SupervisorOptions(on_failure=lambda text: send(_Failed(text)))
    supervisor = Supervisor(backend, [job], options)

    def on_control(ready: Any) -> None:
        try:
            message = ready.recv()
        except (EOFError, OSError):
            supervisor.request_stop()
            supervisor.unwatch(ready)
            return
        match message:
            case _Query(seq=seq):
                send(_Answer(seq, supervisor.status()))
            case _Resign():
                supervisor.election().resign()
            case _Stop():
                supervisor.request_stop()
            case _:
                pass

    supervisor.watch(conn, on_control)
    send(_Ready(os.getpid()))
    supervisor.run()


class Master:
    """go-master's ``Master``, with its defects fixed.

    ``start()`` spawns a supervisor process and returns. The start hook runs in a worker process
    when this node becomes master; the stop hook runs when it stops being master, never before
    the start hook has returned or been killed. ``stop()`` stops a node whether or not it is
    master. Errors from hooks reach ``on_error`` and the ``gomaster`` logger. ``metrics`` and
    ``on_new_leader`` observe the election from this (the application's) process.
    """

    def __init__(
        self,
        backend: LockBackend | str | None = None,
        *,
        name: str = "default",
        start_hook: Hook | None = None,
        stop_hook: Hook | None = None,
        timing: Timing | None = None,
        version: str = "",
        on_error: Callable[[Exception], None] | None = None,
        metrics: Metrics | None = None,
        on_new_leader: Callable[[LockRecord | None], None] | None = None,
    ) -> None:
        self._name, self._timing = check_config(name, timing, version)
        hooks = [h for h in (start_hook, stop_hook) if h is not None]
        if hooks:
            check_targets(hooks)
        self._backend = resolve_backend(backend)
        self._hooks = (start_hook, stop_hook)
        self._version = version
        self._on_error = on_error
        self._watch = watcher(metrics, on_new_leader)
        self._id = ""
        self._conn: Any = None
        self._process: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._answers: dict[int, Status] = {}
        self._answered = threading.Condition()
        self._seq = 0
        self._is_master = False
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._console = False

    @property
    def id(self) -> str:
        """This start's node id (fresh for every ``start()``); "" before the first start."""
        return self._id

    def start(self) -> None:
        """Join the election in a supervisor process and return. Calling it twice is an error."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("Master.start() was already called; create a new Master to start again")
            self._id = uuid.uuid4().hex
            # Whether the application has set up logging is a fact of this process, and of now.
            self._console = not logging_configured()
            # The supervisor's pipe must not land on a closed fd 0-2 of the application.
            hold_standard_fds()
            self._thread = threading.Thread(target=self._own_supervisor, name="gomaster-master", daemon=True)
            self._thread.start()
        if not self._started.wait(START_TIMEOUT):
            raise RuntimeError(f"the gomaster supervisor did not start within {START_TIMEOUT} s")
        if self._start_error is not None:
            raise self._start_error

    def _own_supervisor(self) -> None:
        """The long-lived thread that creates the supervisor (its parent-death signal follows
        this thread) and then reads everything the supervisor sends."""
        context = multiprocess.get_context("spawn")
        mine, theirs = context.Pipe()
        spec = _Spec(
            name=self._name,
            node_id=self._id,
            timing=self._timing,
            version=self._version,
            console=self._console,
        )
        try:
            process = context.Process(
                target=_supervisor_main,
                args=(theirs, self._hooks, self._backend, spec),
                name="gomaster-supervisor",
            )
            process.start()
        except Exception as exc:
            self._start_error = exc
            self._started.set()
            return
        theirs.close()
        self._conn, self._process = mine, process
        while True:
            try:
                message = mine.recv()
            except (EOFError, OSError):
                break
            self._on_message(message)
        self._is_master = False
        self._started.set()
        with self._answered:
            self._answered.notify_all()

    def _on_message(self, message: object) -> None:
        match message:
            case _Ready():
                self._started.set()
            case _RoleChanged(is_master=is_master):
                self._is_master = is_master
            case _Answer(seq=seq, status=status):
                with self._answered:
                    self._answers[seq] = status
                    self._answered.notify_all()
            case RenewOutcome() | RoleChanged() | HolderChanged() as seen:
                if self._watch is not None:
                    try:
                        self._watch(seen)
                    except Exception:
                        _log.exception("metrics or on_new_leader raised")
            case _Failed(text=text):
                _log.error("hook failed: %s", text)
                if self._on_error is not None:
                    try:
                        self._on_error(HookError(text))
                    except Exception:
                        _log.exception("on_error callback raised")
            case _:
                pass

    def _send(self, message: object) -> bool:
        with self._lock:
            if self._conn is None:
                return False
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                return False
            return True

    def is_master(self) -> bool:
        """True while this node is master, as its supervisor last reported."""
        return self._is_master and self._alive()

    def _alive(self) -> bool:
        return self._process is not None and bool(self._process.is_alive())

    def status(self) -> Status:
        """The supervisor's view of the lock; raises ``RuntimeError`` if it is not running."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        if not self._alive() or not self._send(_Query(seq)):
            raise RuntimeError("this Master is not running: call start() first")
        with self._answered:
            if not self._answered.wait_for(lambda: seq in self._answers or not self._alive(), QUERY_TIMEOUT):
                raise TimeoutError(f"the supervisor did not answer within {QUERY_TIMEOUT} s")
            if seq not in self._answers:
                raise RuntimeError("the supervisor stopped while answering")
            return self._answers.pop(seq)

    def resign(self) -> None:
        """Step down (stopping the hooks and releasing the lock); contend again after one ttl."""
        self._send(_Resign())

    def stop(self, timeout: float | None = None) -> None:
        """Stop the hooks, release the lock and end the supervisor; returns when all are gone.

        With ``timeout`` set, a supervisor still running after that many seconds is killed.
        """
        if self._process is None:
            return
        self._send(_Stop())
        self._process.join(timeout)
        if self._process.is_alive():
            _log.error("supervisor did not stop within %s s; killing it", timeout)
            self._process.kill()
            self._process.join(1.0)
        self._is_master = False
        if self._thread is not None:
            self._thread.join(1.0)
