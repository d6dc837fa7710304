"""``Master``: go-master's API (start/stop/is_master/id/status) over a supervisor process.

The application process keeps only a pipe to the supervisor. The supervisor runs the election
and the hooks in worker processes, so nothing the hooks do can stall the heartbeat, and it dies
with the application (parent-death signal and pipe EOF), releasing the lock as it goes. Every
``Master`` of the application on one backend shares one supervisor process (see
:mod:`gomaster.runtime.host`), each with its own lock name.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeAlias

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.events import Elected
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from gomaster.runtime.console import logging_configured
from gomaster.runtime.elector import HolderChanged, RenewOutcome, RoleChanged
from gomaster.runtime.guard import Guard
from gomaster.runtime.host import ANSWER_TIMEOUT, HOSTS, Host
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.protocol import Failed, Hook, Member, Seen, ToMember
from gomaster.runtime.protocol import RoleChanged as MasterChanged
from gomaster.runtime.status import Status
from gomaster.runtime.supervise import check_config, check_targets, watcher
from gomaster.runtime.supervisor import InApp, Overrun

if TYPE_CHECKING:
    from gomaster.runtime.metrics import Metrics

_log = logging.getLogger("gomaster")


class HookError(Exception):
    """A start or stop hook raised, exited or was killed; the election carried on."""


#: Where a Master's hooks run: a thread of the application (go-master's model: the start hook
#: starts the work and returns, the stop hook stops it), or worker processes (each hook is the
#: work, and is killed with its whole process tree on demotion).
HookMode: TypeAlias = Literal["thread", "process"]
#: What the hook thread of ``hooks="thread"`` acts on, in order.
_HookEvent: TypeAlias = Literal["elected", "demoted", "lapsed", "renewed"]


class _ThreadHooks:
    """A Master's hooks in this process, on one thread, in order: a tenure's stop hook never
    starts before its start hook has returned, and the supervisor hears that the tenure's work
    stopped once the stop hook has returned. A :class:`Guard` keeps the promise when a hook
    does not return: ``grace`` after the stop was asked for (by the demotion, or by the lease
    running out), the process ends (or, with ``overrun="warn"``, it is only logged).

    When the lease runs out without a demotion, the stop hook runs but the supervisor is not
    told yet: its tenure goes on until it demotes (then it hears at once) or its renewal is
    published after all (then the start hook runs again, under the same token). Every decision
    is taken on the hook thread, in the order the events were queued.
    """

    def __init__(
        self,
        hooks: tuple[Hook | None, Hook | None],
        lease: SharedLease,
        grace: float,
        overrun: Overrun,
        stopped: Callable[[int], None],
        failed: Callable[[str], None],
    ) -> None:
        self._start, self._stop = hooks
        self._stopped = stopped
        self._failed = failed
        self._queue: queue.Queue[tuple[_HookEvent, int] | None] = queue.Queue()
        #: On the hook thread only: the token whose start hook ran and whose stop hook has not,
        #: the token whose hooks stopped because its lease ran out, and the newest demoted token.
        self._running: int | None = None
        self._lapsed: int | None = None
        self._ended = 0
        self._guard = Guard(lease, grace, overrun, self._lease_ran_out, self._lease_came_back)
        self._thread = threading.Thread(target=self._run, name="gomaster-hooks", daemon=True)
        self._thread.start()

    def elected(self, token: int) -> None:
        """Tenure ``token`` began: run the start hook."""
        self._guard.watch(token)
        self._queue.put(("elected", token))

    def demoted(self, token: int) -> None:
        """Tenure ``token`` ended: run the stop hook (unless the lease's end ran it already), then
        tell the supervisor (from any thread)."""
        self._guard.stopping(token)
        self._queue.put(("demoted", token))

    def _lease_ran_out(self, token: int) -> None:
        self._guard.stopping(token)
        self._queue.put(("lapsed", token))

    def _lease_came_back(self, token: int) -> None:
        self._queue.put(("renewed", token))

    def close(self) -> None:
        """End the threads once what is queued has run."""
        self._queue.put(None)
        self._thread.join(1.0)
        self._guard.close()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            what, token = item
            if what == "elected" or (what == "renewed" and self._lapsed == token and token > self._ended):
                self._lapsed, self._running = None, token
                if what == "renewed":
                    self._guard.watch(token)
                self._call("start", self._start, token)
            elif what == "lapsed" and self._running == token:
                self._call("stop", self._stop, token)
                self._running, self._lapsed = None, token
                self._guard.settle(token)
            elif what == "demoted":
                self._ended = max(self._ended, token)
                if self._running == token:
                    self._call("stop", self._stop, token)
                    self._running = None
                    self._guard.settle(token)
                if self._lapsed == token:
                    self._lapsed = None
                self._stopped(token)

    def _call(self, what: str, hook: Hook | None, token: int) -> None:
        if hook is None:
            return
        try:
            hook()
        except Exception:
            self._failed(f"{what}_hook raised under token {token}:\n{traceback.format_exc().rstrip()}")


class Master:
    """go-master's ``Master``, with its defects fixed.

    ``start()`` joins the election in the application's supervisor process for this backend
    (spawning it for the first ``Master``) and returns. With ``hooks="process"`` (the default)
    each hook runs in a worker process and *is* the work: the start hook blocks while the work
    runs and is killed with its process tree on demotion; the stop hook runs after it, in a
    fresh process. With ``hooks="thread"`` (go-master's model) the start hook runs in a thread
    of this process when this node becomes master and should start the work and return; the
    stop hook runs when it stops being master, never before the start hook has returned, and
    should stop the work; a hook still running ``grace`` after the demotion ends the
    application (``overrun="kill"``; with ``"warn"`` it is only logged), so the work cannot
    outlive the lease. ``stop()`` stops a node whether or not it is master. Errors
    from hooks reach ``on_error`` and the ``gomaster`` logger. ``metrics`` and
    ``on_new_leader`` observe the election from this (the application's) process.

    Each ``Master`` of one process takes its own lock name: a second one started for a name
    already started (on the same backend) is refused with ``ValueError``.
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
        hooks: HookMode = "process",
        overrun: Overrun = "kill",
    ) -> None:
        self._name, self._timing = check_config(name, timing, version)
        if hooks not in ("thread", "process"):
            raise ValueError(f"hooks must be 'thread' or 'process', not {hooks!r}")
        if overrun not in ("kill", "warn"):
            raise ValueError(f"overrun must be 'kill' or 'warn', not {overrun!r}")
        self._mode: HookMode = hooks
        self._overrun: Overrun = overrun
        self._threads: _ThreadHooks | None = None
        given = [h for h in (start_hook, stop_hook) if h is not None]
        if given and hooks == "process":
            check_targets(given)
        self._backend = resolve_backend(backend)
        self._hooks = (start_hook, stop_hook)
        self._version = version
        self._on_error = on_error
        self._watch = watcher(metrics, on_new_leader)
        self._id = ""
        self._host: Host | None = None
        self._lock = threading.Lock()
        self._started = False
        self._is_master = False
        #: When the supervisor announced the last role change (``RoleChanged.at``), for benches.
        self._announced_at = 0.0
        self._lease: SharedLease | None = None
        self._leadership: Leadership | None = None
        self._set_up = threading.Event()

    @property
    def id(self) -> str:
        """This start's node id (fresh for every ``start()``); "" before the first start."""
        return self._id

    def start(self) -> None:
        """Join the election in the supervisor process and return. Calling it twice is an
        error, and so is starting a lock name another ``Master`` of this process has started."""
        with self._lock:
            if self._started:
                raise RuntimeError("Master.start() was already called; create a new Master to start again")
            self._started = True
        self._id = uuid.uuid4().hex
        start_hook, stop_hook = self._hooks
        in_thread = self._mode == "thread"
        member = Member(
            name=self._name,
            node_id=self._id,
            timing=self._timing,
            version=self._version,
            start_hook=None if in_thread else start_hook,
            stop_hook=None if in_thread else stop_hook,
            in_app=InApp(os.getpid(), self._overrun) if in_thread else None,
        )
        try:
            # Whether the application has set up logging is a fact of this process, and of now.
            self._host, lease = HOSTS.enter(self._backend, member, self, console=not logging_configured())
            self._lease = lease
            if in_thread:
                host = self._host
                self._threads = _ThreadHooks(
                    self._hooks,
                    lease,
                    self._timing.grace,
                    self._overrun,
                    stopped=lambda token: host.work_stopped(self._name, token),
                    failed=self._thread_hook_failed,
                )
        finally:
            self._set_up.set()

    def heard(self, message: ToMember) -> None:
        """What the supervisor says about this Master's name (on the host's reader thread). A
        message that comes while :meth:`start` is still setting up (an election won at once)
        waits for it."""
        self._set_up.wait(ANSWER_TIMEOUT)
        match message:
            case MasterChanged(event=event, at=at):
                self._announced_at = at
                self._is_master = isinstance(event, Elected)
                self._leadership = (
                    Leadership(event.name, event.node_id, event.token, event.since, self._lease)
                    if isinstance(event, Elected)
                    else None
                )
                if self._threads is not None:
                    if isinstance(event, Elected):
                        self._threads.elected(event.token)
                    else:
                        self._threads.demoted(event.token)
            case Seen(seen=RenewOutcome() | RoleChanged() | HolderChanged() as seen):
                if self._watch is not None:
                    try:
                        self._watch(seen)
                    except Exception:
                        _log.exception("metrics or on_new_leader raised")
            case Failed(text=text):
                # The supervisor has logged it (to stderr, or through this process's logging).
                if self._on_error is not None:
                    try:
                        self._on_error(HookError(text))
                    except Exception:
                        _log.exception("on_error callback raised")
            case _:
                pass

    def _thread_hook_failed(self, text: str) -> None:
        """A hook raised in this process's hook thread: log it, and tell ``on_error``."""
        _log.error("%s", text)
        self.heard(Failed(self._name, text))

    def host_gone(self) -> None:
        """The supervisor process ended: this node is master no more (a hook still running
        stops, or the guard ends the process when its lease runs out)."""
        self._is_master = False

    @property
    def leadership(self) -> Leadership | None:
        """This node's tenure while it is master, else None: its fencing ``token`` for writes
        elsewhere, and ``valid()``, read from shared memory without I/O (the hooks of
        ``hooks="thread"`` check it before each side effect)."""
        return self._leadership

    def is_master(self) -> bool:
        """True while this node is master, as its supervisor last reported."""
        return self._is_master and self._host is not None and self._host.alive()

    def status(self) -> Status:
        """The supervisor's view of the lock; raises ``RuntimeError`` if it is not running."""
        if self._host is None:
            raise RuntimeError("this Master is not running: call start() first")
        return self._host.status(self._name)

    def resign(self) -> None:
        """Step down (stopping the hooks and releasing the lock); contend again after one ttl."""
        if self._host is not None:
            self._host.resign(self._name)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the hooks and release the lock; returns when the hooks are gone and the release
        is sent (the last ``Master`` of the process also ends the supervisor process).

        With ``timeout`` set, a supervisor still running after that many seconds is killed
        when this was its last ``Master``, and only logged about otherwise.
        """
        host, self._host = self._host, None
        if host is None:
            return
        HOSTS.leave(host, self._name, timeout)
        self._is_master, self._leadership = False, None
        if self._threads is not None:
            self._threads.close()
