"""``Master``: go-master's API (start/stop/is_master/id/status) over a supervisor process.

The application process keeps only a pipe to the supervisor. The supervisor runs the election
and the hooks in worker processes, so nothing the hooks do can stall the heartbeat, and it dies
with the application (parent-death signal and pipe EOF), releasing the lock as it goes. Every
``Master`` of the application on one backend shares one supervisor process (see
:mod:`gomaster.runtime.host`), each with its own lock name.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from gomaster.runtime.console import logging_configured
from gomaster.runtime.elector import HolderChanged, RenewOutcome, RoleChanged
from gomaster.runtime.host import HOSTS, Failed, Hook, Host, Member, Seen, ToMember
from gomaster.runtime.host import RoleChanged as MasterChanged
from gomaster.runtime.status import Status
from gomaster.runtime.supervise import check_config, check_targets, watcher

if TYPE_CHECKING:
    from gomaster.runtime.metrics import Metrics

_log = logging.getLogger("gomaster")


class HookError(Exception):
    """A start or stop hook raised, exited or was killed; the election carried on."""


class Master:
    """go-master's ``Master``, with its defects fixed.

    ``start()`` joins the election in the application's supervisor process for this backend
    (spawning it for the first ``Master``) and returns. The start hook runs in a worker process
    when this node becomes master; the stop hook runs when it stops being master, never before
    the start hook has returned or been killed. ``stop()`` stops a node whether or not it is
    master. Errors from hooks reach ``on_error`` and the ``gomaster`` logger. ``metrics`` and
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
        self._host: Host | None = None
        self._lock = threading.Lock()
        self._started = False
        self._is_master = False

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
        member = Member(
            name=self._name,
            node_id=self._id,
            timing=self._timing,
            version=self._version,
            start_hook=start_hook,
            stop_hook=stop_hook,
        )
        # Whether the application has set up logging is a fact of this process, and of now.
        self._host = HOSTS.enter(self._backend, member, self, console=not logging_configured())

    def heard(self, message: ToMember) -> None:
        """What the supervisor says about this Master's name (on the host's reader thread)."""
        match message:
            case MasterChanged(is_master=is_master):
                self._is_master = is_master
            case Seen(seen=RenewOutcome() | RoleChanged() | HolderChanged() as seen):
                if self._watch is not None:
                    try:
                        self._watch(seen)
                    except Exception:
                        _log.exception("metrics or on_new_leader raised")
            case Failed(text=text):
                _log.error("hook failed: %s", text)
                if self._on_error is not None:
                    try:
                        self._on_error(HookError(text))
                    except Exception:
                        _log.exception("on_error callback raised")
            case _:
                pass

    def host_gone(self) -> None:
        """The supervisor process ended: this node is master no more."""
        self._is_master = False

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
        self._is_master = False
