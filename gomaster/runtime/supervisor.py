"""The supervisor: runs the elector and turns mastership into worker processes, arbiter-style.

One supervisor carries any number of lock names (:class:`Job`), each an election of its own on
one shared elector thread, one zygote and one backend connection. Signal handlers and the
elector's thread only enqueue; one loop on the main thread drains the queue and reconciles the
workers that should exist with those that do. Workers are forked by a
zygote (:mod:`gomaster.runtime.zygote`) when a tenure needs them; a node joins the election once
its zygote has booted. How a tenure's processes are ended is in docs/concepts.md ("Processes",
"Containment"). The elector releases the lease only after every worker is gone.

Names may join and leave while it runs (:meth:`Supervisor.add`, :meth:`Supervisor.remove`: the
``Master`` objects of an application share one supervisor). A name whose work runs in the
application instead of in workers (:class:`InApp`) holds its release until the application says
the work stopped, and the supervisor kills the application when it has not within ``grace``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import queue
import select
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, TypeAlias

from multiprocess.connection import wait as wait_ready

from gomaster.backends.base import LockBackend
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted, Elected, Renewed, Shutdown, ToWorker
from gomaster.core.timing import Timing
from gomaster.runtime.clock import boottime
from gomaster.runtime.elector import Election, Elector, Hold, Watched
from gomaster.runtime.fds import allow_descriptors, hold_standard_fds
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.packing import modules_for, pack
from gomaster.runtime.status import Status, status_from_record
from gomaster.runtime.tree import KILL_TREE_TIMEOUT, signal_tree
from gomaster.runtime.wire import receive, send
from gomaster.runtime.worker import (
    KILL_NOW_SIGNAL,
    Assign,
    Target,
    TargetFailed,
    TargetStarted,
    WorkerExit,
    WorkerLog,
    WorkerReady,
    WorkerSpec,
)
from gomaster.runtime.zygote import ForkedWorker, Zygote

#: First restart delay after a target fails; doubles per failure in a row up to the maximum.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
#: A target that ran this long before failing starts its failure count afresh.
BACKOFF_RESET_AFTER = 30.0
#: Extra time the elector waits for the supervisor to confirm the work stopped.
STOP_ACK_SLACK = 1.0
#: A dead or frozen zygote is replaced at most this often.
ZYGOTE_RESTART_EVERY = 1.0
#: How long a stop hook's worker may take to load the hook before its grace starts.
STOP_HOOK_BOOT = 5.0
#: How often the supervisor SIGKILLs the tree below a worker whose grace ran out.
SWEEP_EVERY = 0.05
#: A worker still alive this long after its grace ran out is wedged: what is below it and its
#: group get SIGKILL (its own sweep gives up after KILL_TREE_TIMEOUT).
KEEPER_WEDGED_AFTER = KILL_TREE_TIMEOUT + 1.0
#: Descriptors a worker costs the supervisor (its socket and its pidfd), and those it needs
#: besides (backend connections, the zygote, pipes).
FDS_PER_WORKER, FDS_SPARE = 2, 256
#: The main loop wakes at least this often even when nothing happens.
IDLE_WAKE = 0.5
#: A node joins the election once its zygote has booted, or after this long without it (a
#: zygote that cannot boot must not keep the node out for ever; see ``START_LIMIT_TTLS``).
JOIN_AFTER_AT_MOST = 10.0
#: A master whose target could not start for this many ttls, and at least ``START_LIMIT_MIN``
#: seconds (time for a new zygote to boot on a busy host), resigns.
START_LIMIT_TTLS, START_LIMIT_MIN = 1.0, 5.0

_log = logging.getLogger("gomaster")


# ---- what reaches the main loop ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signalled:
    #: The signal received, or 0 for :meth:`Supervisor.request_stop`.
    signum: int


@dataclass(frozen=True, slots=True)
class _Announced:
    lock: _Lock
    event: Elected | Demoted


@dataclass(frozen=True, slots=True)
class _ElectorDone:
    pass


@dataclass(frozen=True, slots=True)
class _Left:
    lock: _Lock


_Queued: TypeAlias = _Signalled | _Announced | _ElectorDone | _Left

#: What to do when a target's worker exits by itself: run it again (with backoff), consider it
#: done for this tenure, or stop this node (releasing the lock).
Verdict: TypeAlias = Literal["restart", "done", "stop"]


def default_verdict(code: int) -> Verdict:
    """Exit 0 means done; anything else (an exception, a crash, a signal) means restart."""
    return "done" if code == 0 else "restart"


@dataclass(slots=True)
class _Worker:
    process: ForkedWorker
    conn: Any
    token: int | None = None
    started_at: float = 0.0
    stopping_since: float | None = None
    #: Told to kill its tree at once (grace ran out); the supervisor sweeps below it too.
    kill_sent: bool = False
    #: Its whole group SIGKILLed by the supervisor (wedged for ``KEEPER_WEDGED_AFTER``).
    killed: bool = False


@dataclass(slots=True)
class _Slot:
    index: int
    label: str
    target: bytes
    worker: _Worker | None = None
    done_token: int | None = None
    #: Since when (boottime) this master wants the target running and has no worker for it.
    waiting_since: float | None = None
    failures: int = 0
    restart_at: float = 0.0
    history: list[int] = field(default_factory=list)


#: What to do when work in the application has not stopped ``grace`` after its demotion: kill
#: the application (the promise kept), or log and carry on (only the fencing token protects).
Overrun: TypeAlias = Literal["kill", "warn"]


@dataclass(frozen=True, slots=True)
class InApp:
    """A name whose work runs in the application process ``pid`` (``gomaster.aio``, in-process
    hooks) rather than in workers. The application says when a tenure's work has stopped
    (:meth:`Supervisor.app_stopped`); until then the release waits, and ``grace`` after the
    demotion the application is SIGKILLed by pid (``overrun="kill"``) or only logged about
    (``"warn"``). A process that is PID 1 of its namespace cannot be killed so: its own
    deadline timer is what holds there."""

    pid: int
    overrun: Overrun = "kill"


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One lock name this supervisor takes part in, and the work its master runs there.

    ``labels`` name the targets in logs (default: their ``__name__``); ``stop_hook`` runs once
    after each tenure's work has stopped; ``on_event`` sees every announcement and ``watch``
    every observation of this name's election (both on the elector thread: keep them quick);
    ``on_failure`` hears of this name's targets failing (as ``SupervisorOptions.on_failure``
    does for every name) and ``on_left`` that the name left (:meth:`Supervisor.remove`), both on
    the supervisor's main thread.
    """

    config: Config
    targets: Sequence[Target]
    labels: Sequence[str] | None = None
    stop_hook: Target | None = None
    on_event: Callable[[Announcement], None] | None = None
    watch: Callable[[Watched], None] | None = None
    on_failure: Callable[[str], None] | None = None
    on_left: Callable[[], None] | None = None
    #: The work runs in the application, not in workers (``targets`` is then empty).
    in_app: InApp | None = None


@dataclass(slots=True)
class _Lock:
    """A job as the supervisor runs it: its election, its lease cell, its workers' slots."""

    job: Job
    #: Its cell in the supervisor's shared lease (a left name's cell serves the next to join).
    position: int
    lease: SharedLease
    slots: list[_Slot]
    cleanup: _Slot | None
    election: Election | None = None
    leader_token: int | None = None
    elected: Elected | None = None
    cleanup_due: Elected | None = None
    #: A demotion's release waits for this lock's work to stop (see ``elector.Hold``).
    owes_resume: bool = False
    #: Its election is over (:meth:`Supervisor.remove`): forgotten once its workers are gone.
    left: bool = False
    #: Work in the application (``Job.in_app``): the tenure it runs, since when it should stop,
    #: whether the application was killed for overrunning, and a pidfd that says it is gone.
    app_token: int | None = None
    app_stopping_since: float | None = None
    app_killed: bool = False
    app_pidfd: int | None = None

    @property
    def name(self) -> str:
        return self.job.config.name

    @property
    def timing(self) -> Timing:
        return self.job.config.timing

    def election_or_raise(self) -> Election:
        if self.election is None:
            raise RuntimeError(f"lock name {self.name!r} has no election")
        return self.election

    def every_slot(self) -> list[_Slot]:
        return [*self.slots, self.cleanup] if self.cleanup is not None else self.slots

    def running(self) -> bool:
        """A worker of this tenure is still alive (running or stopping), or its work in the
        application has not said it stopped."""
        return self.app_token is not None or any(
            s.worker is not None and s.worker.token is not None for s in self.slots
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorOptions:
    """Policy knobs of the supervisor, with defaults fit for most services."""

    max_failures: int | None = None
    log_level: int = logging.INFO
    on_failure: Callable[[str], None] | None = None
    on_exit: Callable[[int], Verdict] | None = None
    #: Load the targets in the zygote at boot (see :mod:`gomaster.runtime.zygote`), so a node
    #: joins only once they are loaded and each start is a fork; else each worker loads its own.
    #: Names added later (:meth:`Supervisor.add`) are not preloaded.
    preload: bool = False
    #: Keep one worker forked ahead of need, so that an election waits for one fork, not two.
    spare: bool = True
    #: How many lock names the supervisor may carry at once, counting those added later; the
    #: names it starts with when None. Each costs a cell of shared memory (16 bytes).
    capacity: int | None = None


def backoff(failures: int) -> float:
    """Restart delay after ``failures`` failures in a row: 0.1 s doubling to 10 s."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * float(2 ** max(0, failures - 1)))


def kill_group(pid: int, sig: int) -> None:
    """Signal a live worker's whole process group (or the worker, if it has no group yet)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _ended(pidfd: int) -> bool:
    """The process behind ``pidfd`` has ended."""
    waiting = select.poll()
    waiting.register(pidfd, select.POLLIN)
    return bool(waiting.poll(0))


def _signal_worker(worker: _Worker, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(worker.process.pid, sig)


def _kill_below(worker: _Worker) -> None:
    """SIGKILL every process below a worker whose grace ran out, leaving the worker itself: it
    is the subreaper that holds whatever would otherwise be orphaned to init."""
    signal_tree(signal.SIGKILL, root=worker.process.pid)


def _retire(worker: _Worker) -> int:
    """Forget a worker process that has exited and close its pipe and pidfd; its exit status
    (negative for a signal).

    A worker that died by a signal may have been killed from outside before it could end its
    tree: whatever is left in its process group is killed now (the group ID cannot be reused
    while the group has members, so this reaches only the tenure's own processes).
    """
    with contextlib.suppress(EOFError, OSError):
        while worker.conn.poll():  # its last words: how it exits
            message = receive(worker.conn)
            if isinstance(message, WorkerExit):
                worker.process.exited(message.code)
    with contextlib.suppress(OSError):
        worker.conn.close()
    code = worker.process.exitcode
    worker.process.close()
    if code is not None and code < 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, signal.SIGKILL)
    return -signal.SIGKILL if code is None else code


class Supervisor:
    """Owns the elector thread and, per lock name, one worker per target while master there;
    ``run`` blocks until stopped."""

    def __init__(
        self,
        backend: LockBackend,
        jobs: Sequence[Job],
        options: SupervisorOptions | None = None,
        *,
        lease: SharedLease | None = None,
    ) -> None:
        """``lease`` is where the names' leases are published, made by whoever else reads them
        (the application, for work in it); by default one of the supervisor's own."""
        names = [job.config.name for job in jobs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"lock name {repeated[0]!r} is given more than once: each name is elected once per node"
            )
        if not jobs:
            raise ValueError("a supervisor needs at least one lock name")
        self._options = options if options is not None else SupervisorOptions()
        capacity = max(len(jobs), self._options.capacity or 0)
        hold_standard_fds()
        self._backend = backend
        if lease is not None and lease.size < capacity:
            raise ValueError(f"the shared lease has {lease.size} cells for {capacity} lock names")
        self._lease = lease if lease is not None else SharedLease(capacity)
        self._free = list(range(capacity - 1, -1, -1))
        self._elector = Elector(backend)
        self._locks: list[_Lock] = []
        self._by_name: dict[str, _Lock] = {}
        self._slot_index = itertools.count()
        # A SimpleQueue's put is reentrant: the signal handler may run while this thread is in
        # ``put`` (a control pipe's EOF and the parent-death SIGTERM arrive together).
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        for job in jobs:
            self._take(job)
        preload = (
            {slot.index: slot.target for lock in self._locks for slot in lock.every_slot()}
            if self._options.preload
            else {}
        )
        packed = [slot.target for lock in self._locks for slot in lock.every_slot()]
        self._zygote = Zygote(self._lease, preload, modules_for(packed))
        self._zygote_started = -math.inf
        #: A worker forked ahead of need, waiting for whichever slot starts next (``_tend_spare``).
        self._spare: tuple[ForkedWorker, Any] | None = None
        #: After a spare could not be forked, the next try waits until then (no retry storm).
        self._spare_after = -math.inf
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._elector_done = False
        #: Started by the main loop once the zygote is ready (see ``_join_election``).
        self._elector_thread = threading.Thread(
            target=self._run_elector, name="gomaster-elector", daemon=True
        )
        self._joined = False
        self._born = boottime()
        #: Exit status of the last target run that ended (a negative number is a signal).
        self.exit_code: int | None = None
        self._watched: dict[Any, Callable[[Any], None]] = {}

    def _take(self, job: Job) -> _Lock:
        """Make ``job`` one of this supervisor's names: its slots, its lease cell, its election."""
        labels = (
            job.labels
            if job.labels is not None
            else [getattr(t, "__name__", f"target-{i}") for i, t in enumerate(job.targets)]
        )
        slots = [_Slot(next(self._slot_index), labels[i], pack(t)) for i, t in enumerate(job.targets)]
        cleanup = (
            _Slot(next(self._slot_index), "stop_hook", pack(job.stop_hook))
            if job.stop_hook is not None
            else None
        )
        position = self._free.pop()
        lock = _Lock(job=job, position=position, lease=self._lease.at(position), slots=slots, cleanup=cleanup)
        if job.in_app is not None:
            lock.app_pidfd = os.pidfd_open(job.in_app.pid)
        lock.election = self._elector.join(
            job.config,
            functools.partial(self._on_announcement, lock),
            watch=job.watch,
            left=functools.partial(self._enqueue, _Left(lock)),
        )
        self._locks.append(lock)
        self._by_name[lock.name] = lock
        workers = sum(len(lock.every_slot()) for lock in self._locks)
        allow_descriptors(FDS_PER_WORKER * workers + FDS_SPARE)
        return lock

    # -- public -------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The lock names this supervisor takes part in, in the order given."""
        return tuple(lock.name for lock in self._locks)

    def election(self, name: str | None = None) -> Election:
        """The election of ``name`` (may be left out when there is one name), for its status and
        to resign."""
        return self._lock(name).election_or_raise()

    def status(self, name: str | None = None) -> Status:
        """What this node knows about the lock ``name`` right now."""
        lock = self._lock(name)
        seen = self.election(lock.name).status()
        server_now = seen.server_now
        if server_now is not None and seen.seen_at is not None:
            server_now += boottime() - seen.seen_at
        return status_from_record(
            name=lock.name,
            node_id=lock.job.config.me.node_id,
            is_master=seen.role == "leader",
            backend=self._backend.url,
            record=seen.record,
            server_now=server_now,
            error=seen.error,
        )

    def add(self, job: Job) -> None:
        """Take part in one more lock name while running. Call it on the thread that runs
        :meth:`run` (from a :meth:`watch` handler); raises ``ValueError`` for a name already
        carried and when ``SupervisorOptions.capacity`` names are, ``RuntimeError`` once
        stopping."""
        name = job.config.name
        if self._stopping:
            raise RuntimeError(f"the supervisor is stopping: lock name {name!r} cannot join")
        if name in self._by_name:
            raise ValueError(f"lock name {name!r} is already carried by this supervisor")
        if not self._free:
            raise ValueError(
                f"this supervisor carries {len(self._locks)} lock names, its capacity: {name!r} cannot join"
            )
        self._take(job)

    def cell(self, name: str) -> int:
        """Which cell of the shared lease holds ``name``'s lease."""
        return self._lock(name).position

    def app_stopped(self, name: str, token: int) -> None:
        """The work of ``name``'s tenure ``token`` in the application has stopped (call it on
        the thread that runs :meth:`run`)."""
        lock = self._by_name.get(name)
        if lock is not None and lock.app_token == token:
            lock.app_token, lock.app_stopping_since = None, None

    def remove(self, name: str) -> None:
        """Leave the election of ``name``: its work stops, its lease is released, then
        ``Job.on_left`` is called and the name may be added again. Other names carry on."""
        self._lock(name).election_or_raise().stop()

    def request_stop(self) -> None:
        """Ask for a graceful stop (safe from any thread or a signal handler)."""
        self._enqueue(_Signalled(0))

    def watch(self, waitable: Any, handler: Callable[[Any], None]) -> None:
        """Also wait on ``waitable`` in the main loop and call ``handler(waitable)`` when ready."""
        self._watched[waitable] = handler

    def unwatch(self, waitable: Any) -> None:
        """Stop waiting on ``waitable``."""
        self._watched.pop(waitable, None)

    def run(self) -> None:
        """Elect, supervise, and return after a graceful stop (SIGTERM, SIGINT or request)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._elector.stop()  # a no-op after a normal stop; after a crash it releases the locks
            self._shutdown_workers()
            self._drop_spare()
            self._zygote.stop()
            if self._joined:
                slack = max((lock.timing.renew_deadline for lock in self._locks), default=0.0)
                self._elector_thread.join(slack + STOP_ACK_SLACK)
            self._backend.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _lock(self, name: str | None) -> _Lock:
        if name is None:
            if len(self._locks) != 1:
                raise ValueError(f"this supervisor runs {len(self._locks)} lock names: say which")
            return self._locks[0]
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(
                f"this supervisor does not run lock name {name!r}; it runs {list(self._by_name)}"
            ) from None

    # -- inputs from other threads ------------------------------------------------------

    def _enqueue(self, item: _Queued) -> None:
        self._queue.put(item)
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._enqueue(_Signalled(signum))

    def _run_elector(self) -> None:
        try:
            self._elector.run()
        finally:
            self._enqueue(_ElectorDone())

    def _on_announcement(self, lock: _Lock, event: Announcement) -> Hold | None:
        """Runs on the elector thread. The lease is published before anyone hears of the event
        (work told it is elected finds its lease valid). A demotion holds that name's release
        until its work has stopped (``_confirm_stops``); the other names carry on meanwhile."""
        hold: Hold | None = None
        match event:
            case Renewed(token=token, deadline=deadline) | Elected(token=token, deadline=deadline):
                lock.lease.publish(token, deadline)
            case Demoted():
                lock.lease.revoke()
                stages = 2 if lock.cleanup is not None or lock.job.in_app is not None else 1
                hold = Hold(until=boottime() + stages * lock.timing.grace + STOP_ACK_SLACK)
        if lock.job.on_event is not None:
            with contextlib.suppress(Exception):
                lock.job.on_event(event)
        if isinstance(event, Elected | Demoted):
            self._enqueue(_Announced(lock, event))
        return hold

    # -- the main loop ------------------------------------------------------------------

    def _loop(self) -> None:
        self._tend_zygote()
        while True:
            self._join_election()
            waitables: list[Any] = [self._wake_r, *self._watched]
            zygote = self._zygote
            if zygote.conn is not None:
                waitables += [zygote.conn, zygote.process.sentinel]
            if self._spare is not None:
                waitables.append(self._spare[0].sentinel)
            for _lock, _slot, worker in self._workers():
                waitables += [worker.conn, worker.process.sentinel]
            ready = wait_ready(waitables, timeout=self._next_timer())
            for item in ready:
                if item == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                elif item in self._watched:
                    self._watched[item](item)
                elif zygote.conn is not None and item == zygote.conn:
                    zygote.on_message()
            self._tend_zygote()
            self._tend_spare()
            self._read_workers(ready)
            self._drain_queue()
            self._reap()
            self._enforce_grace()
            self._enforce_app_grace()
            self._reconcile()
            self._run_stop_hooks()
            self._confirm_stops()
            self._forget_left()
            if self._stopping and self._elector_done and not self._running():
                return

    def _tend_zygote(self) -> None:
        """Start the zygote, and start another when it died, froze on a fork, or did not boot
        within ``JOIN_AFTER_AT_MOST`` (at most once a second)."""
        now = boottime()
        zygote = self._zygote
        booting = zygote.alive() and not zygote.ready
        if booting and now >= self._zygote_started + JOIN_AFTER_AT_MOST:
            _log.warning("the zygote did not boot within %.0f s", JOIN_AFTER_AT_MOST)
            zygote.stop()
        if self._stopping or zygote.alive():
            return
        if now < self._zygote_started + ZYGOTE_RESTART_EVERY:
            return
        if self._zygote_started > -math.inf:
            _log.warning("the zygote that forks workers is gone: starting another")
            self._zygote.stop()
        self._zygote_started = now
        self._zygote.start()

    def _tend_spare(self) -> None:
        """Keep one worker forked ahead of need while some name runs its work in workers: an
        election then costs one fork (the target's), not two. A spare that died is replaced."""
        if self._spare is not None and not self._spare[0].is_alive():
            self._drop_spare()
        if self._spare is not None or self._stopping or not self._zygote.ready or not self._options.spare:
            return
        if boottime() < self._spare_after or not any(lock.every_slot() for lock in self._locks):
            return
        forked = self._zygote.fork(None)
        if isinstance(forked, str):
            _log.warning("cannot fork a spare worker: %s", forked)
            self._spare_after = boottime() + ZYGOTE_RESTART_EVERY
            return
        self._spare = forked

    def _drop_spare(self) -> None:
        """End the spare, if any (closing its socket alone would end it too)."""
        if self._spare is None:
            return
        process, conn = self._spare
        self._spare = None
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(process.sentinel, signal.SIGKILL)
        with contextlib.suppress(OSError):
            conn.close()
        process.close()

    def _join_election(self) -> None:
        """Start the elector once the zygote is ready (see JOIN_AFTER_AT_MOST)."""
        if self._joined:
            return
        if self._stopping:
            self._elector_done = True  # never joined: there is nothing to leave
            return
        ready = self._zygote.ready
        waited = boottime() - self._born
        if not ready and waited < JOIN_AFTER_AT_MOST:
            return
        if not ready:
            _log.warning(
                "no zygote after %.0f s: joining the election of %s anyway", waited, self._names_text()
            )
        self._joined = True
        self._elector_thread.start()

    def _names_text(self) -> str:
        shown = ", ".join(repr(lock.name) for lock in self._locks[:3])
        return shown if len(self._locks) <= 3 else f"{shown} and {len(self._locks) - 3} more"

    def _begin_stop(self) -> None:
        self._stopping = True
        self._elector.stop()

    def _next_timer(self) -> float:
        now = boottime()
        timers = [now + IDLE_WAKE]
        if not self._joined:
            timers.append(self._born + JOIN_AFTER_AT_MOST)
        if not self._zygote.alive():
            timers.append(self._zygote_started + ZYGOTE_RESTART_EVERY)
        for lock, _slot, worker in self._workers():
            if worker.stopping_since is not None and not worker.killed:
                out_of_grace = worker.stopping_since + lock.timing.grace
                timers.append(now + SWEEP_EVERY if worker.kill_sent else out_of_grace)
        for lock in self._locks:
            if lock.app_stopping_since is not None:
                out_of_grace = lock.app_stopping_since + lock.timing.grace
                timers.append(now + SWEEP_EVERY if lock.app_killed else out_of_grace)
        for lock in self._leading():
            for slot in lock.slots:
                idle = slot.worker is None or slot.worker.token is None
                if idle and slot.restart_at > now:
                    timers.append(slot.restart_at)
        return max(0.0, min(timers) - now)

    def _leading(self) -> list[_Lock]:
        return [lock for lock in self._locks if lock.leader_token is not None]

    def _drain_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            match item:
                case _Signalled(signum=signum):
                    if not self._stopping:
                        why = f"signal {signal.Signals(signum).name}" if signum else "stop requested"
                        _log.info("%s: stopping workers, releasing the lock", why)
                        self._begin_stop()
                case _ElectorDone():
                    self._elector_done = True
                    self._stopping = True
                case _Left(lock=lock):
                    lock.left = True
                case _Announced(lock=lock, event=Elected() as elected):
                    lock.elected = elected
                    lock.leader_token = elected.token
                    if lock.job.in_app is not None:
                        lock.app_token, lock.app_stopping_since = elected.token, None
                    for slot in lock.slots:
                        slot.failures, slot.restart_at = 0, 0.0
                    self._reconcile_lock(lock)  # the work starts first, then the log line
                    _log.info(
                        "elected master of %r with token %d",
                        lock.name,
                        elected.token,
                        extra={"lock": lock.name, "token": elected.token},
                    )
                case _Announced(lock=lock, event=Demoted() as demoted):
                    lock.leader_token = None
                    _log.log(
                        logging.INFO if demoted.reason in ("stopped", "resigned") else logging.WARNING,
                        "demoted from master of %r (token %d): %s",
                        lock.name,
                        demoted.token,
                        demoted.reason,
                        extra={"lock": lock.name, "token": demoted.token},
                    )
                    for slot in lock.slots:
                        if slot.worker is not None and slot.worker.token is not None:
                            self._stop_worker(slot.worker, demoted)
                    if lock.app_token is not None and lock.app_stopping_since is None:
                        lock.app_stopping_since = boottime()
                    if lock.cleanup is not None and lock.elected is not None:
                        lock.cleanup_due = lock.elected
                    lock.owes_resume = True

    def _workers(self) -> list[tuple[_Lock, _Slot, _Worker]]:
        """Every live worker process (running or stopping), with its lock and slot."""
        return [
            (lock, slot, slot.worker)
            for lock in self._locks
            for slot in lock.every_slot()
            if slot.worker is not None
        ]

    def _read_workers(self, ready: list[Any]) -> None:
        for lock, slot, worker in self._workers():
            if worker.conn not in ready:
                continue
            with contextlib.suppress(EOFError, OSError):
                while worker.conn.poll():
                    self._on_worker_message(lock, slot, worker, receive(worker.conn))

    def _on_worker_message(self, lock: _Lock, slot: _Slot, worker: _Worker, message: object) -> None:
        match message:
            case WorkerLog(logger=name, level=level, message=text):
                logging.getLogger(name).log(level, "%s", text)
            case WorkerReady():
                pass
            case WorkerExit(code=code):
                worker.process.exited(code)
            case TargetStarted(token=token):
                _log.debug("target %s of %r started under token %d", slot.label, lock.name, token)
                if slot is lock.cleanup:
                    worker.stopping_since = boottime()
            case TargetFailed(token=token, error=error):
                _log.error("target %s raised under token %d:\n%s", slot.label, token, error.rstrip())
                self._report_failure(lock, f"{slot.label} raised under token {token}:\n{error.rstrip()}")
            case _:
                pass

    def _report_failure(self, lock: _Lock, text: str) -> None:
        for report in (lock.job.on_failure, self._options.on_failure):
            if report is not None:
                with contextlib.suppress(Exception):
                    report(text)

    def _reap(self) -> None:
        now = boottime()
        for lock, slot, worker in self._workers():
            if worker.process.is_alive():
                continue
            slot.worker = None
            code = _retire(worker)
            if slot is lock.cleanup:
                if code != 0:
                    self._report_failure(lock, f"stop_hook exited with {code}")
                continue
            if worker.token is not None:
                self.exit_code = code
            if worker.token is None or worker.stopping_since is not None:
                continue
            verdict = (self._options.on_exit or default_verdict)(code)
            if verdict != "restart":
                slot.done_token = worker.token
                _log.info("target %s finished under token %d with %s", slot.label, worker.token, code)
                if verdict == "stop" and not self._stopping:
                    self._begin_stop()
                continue
            if now - worker.started_at > BACKOFF_RESET_AFTER:
                slot.failures = 0
            slot.failures += 1
            slot.restart_at = now + backoff(slot.failures)
            self._report_failure(lock, f"{slot.label} exited with {code} under token {worker.token}")
            _log.error(
                "target %s exited with %s under token %d (%d in a row); restarting in %.1f s",
                slot.label,
                code,
                worker.token,
                slot.failures,
                slot.restart_at - now,
            )
            limit = self._options.max_failures
            if limit is not None and slot.failures >= limit and lock.leader_token == worker.token:
                _log.error(
                    "target %s failed %d times in a row: resigning mastership of %r",
                    slot.label,
                    slot.failures,
                    lock.name,
                )
                self.election(lock.name).resign()

    def _enforce_grace(self) -> None:
        now = boottime()
        for lock, slot, worker in self._workers():
            if worker.stopping_since is None or worker.killed:
                continue
            out_of_grace = worker.stopping_since + lock.timing.grace
            if now < out_of_grace:
                continue
            if not worker.kill_sent:
                _signal_worker(worker, KILL_NOW_SIGNAL)
                worker.kill_sent = True
            _kill_below(worker)
            if now >= out_of_grace + KEEPER_WEDGED_AFTER:
                _log.error("worker for %s is wedged: killing it and its group", slot.label)
                kill_group(worker.process.pid, signal.SIGKILL)
                worker.killed = True

    def _enforce_app_grace(self) -> None:
        """Work in the application that outlives its grace: kill the application (by pid, not
        group: the processes of one server may share a group) or, with ``overrun="warn"``, log
        and go on. An application that has ended has stopped its work, however it ended."""
        now = boottime()
        for lock in self._locks:
            in_app = lock.job.in_app
            if in_app is None or lock.app_token is None:
                continue
            if lock.app_pidfd is not None and _ended(lock.app_pidfd):
                lock.app_token, lock.app_stopping_since = None, None
                continue
            since = lock.app_stopping_since
            if since is None or now < since + lock.timing.grace or lock.app_killed:
                continue
            if in_app.overrun == "warn":
                _log.warning(
                    "the work of %r in the application did not stop within %.1f s of its demotion; "
                    "going on (overrun='warn'): only its fencing token %d protects now",
                    lock.name,
                    lock.timing.grace,
                    lock.app_token,
                )
                lock.app_token, lock.app_stopping_since = None, None
                continue
            _log.error(
                "the work of %r in the application (pid %d) did not stop within %.1f s of its "
                "demotion: killing the application",
                lock.name,
                in_app.pid,
                lock.timing.grace,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(in_app.pid, signal.SIGKILL)
            lock.app_killed = True

    def _reconcile(self) -> None:
        """Make the workers match the roles: where master, one per target not done in this
        tenure (at once, or when its restart backoff ends); where follower, none."""
        for lock in self._locks:
            self._reconcile_lock(lock)

    def _reconcile_lock(self, lock: _Lock) -> None:
        token, elected = lock.leader_token, lock.elected
        if self._stopping or token is None or elected is None:
            for slot in lock.slots:
                slot.waiting_since = None
            return
        now = boottime()
        for slot in lock.slots:
            if slot.worker is not None or slot.done_token == token or now < slot.restart_at:
                slot.waiting_since = None
                continue
            worker = self._fork(lock, slot, elected)
            if worker is None:
                self._starting_late(lock, slot)
                continue
            slot.waiting_since = None
            worker.token, worker.started_at = token, now
            slot.worker = worker

    def _starting_late(self, lock: _Lock, slot: _Slot) -> None:
        """A target this master cannot start (no zygote): resign once it waited long enough
        (``START_LIMIT_TTLS``), rather than hold a lease with its work not running."""
        now = boottime()  # a fork that timed out took a while
        if slot.waiting_since is None:
            slot.waiting_since = now
            return
        limit = max(START_LIMIT_TTLS * lock.timing.ttl, START_LIMIT_MIN)
        if now - slot.waiting_since >= limit:
            _log.error(
                "target %s could not start for %.1f s: resigning mastership of %r",
                slot.label,
                limit,
                lock.name,
            )
            slot.waiting_since = None
            self.election(lock.name).resign()

    def _run_stop_hooks(self) -> None:
        """After a tenure's work is gone, run its stop hook once in a worker of its own. The
        hook gets ``grace`` from the moment it starts (its worker first gets time to load it): it
        is cleanup after the work has already stopped, so it does not race the lease."""
        for lock in self._locks:
            cleanup, due = lock.cleanup, lock.cleanup_due
            if cleanup is None or due is None or lock.running():
                continue
            worker = self._fork(lock, cleanup, due, watch_deadline=False)
            if worker is None:
                continue
            lock.cleanup_due = None
            cleanup.worker = worker
            worker.stopping_since = boottime() + STOP_HOOK_BOOT  # TargetStarted starts the grace
            worker.token = due.token

    def _confirm_stops(self) -> None:
        for lock in self._locks:
            if not lock.owes_resume or lock.running():
                continue
            cleaning = lock.cleanup is not None and (
                lock.cleanup.worker is not None or lock.cleanup_due is not None
            )
            if not cleaning:
                lock.owes_resume = False
                self.election(lock.name).resume()

    def _forget_left(self) -> None:
        """Drop the names whose election is over once nothing of theirs runs, freeing the name
        and its lease cell, and say so (``Job.on_left``)."""
        for lock in [lock for lock in self._locks if lock.left]:
            if any(slot.worker is not None for slot in lock.every_slot()) or lock.cleanup_due is not None:
                continue
            self._locks.remove(lock)
            del self._by_name[lock.name]
            if lock.app_pidfd is not None:
                os.close(lock.app_pidfd)
            lock.lease.revoke()
            self._free.append(lock.position)
            if lock.job.on_left is not None:
                with contextlib.suppress(Exception):
                    lock.job.on_left()

    def _running(self) -> bool:
        return any(lock.running() for lock in self._locks)

    # -- worker processes ---------------------------------------------------------------

    def _fork(
        self, lock: _Lock, slot: _Slot, elected: Elected, *, watch_deadline: bool = True
    ) -> _Worker | None:
        """A worker for ``slot`` from the zygote, starting ``elected``'s tenure at once; None
        while there is no zygote ready."""
        spec = WorkerSpec(
            index=slot.index,
            label=slot.label,
            grace=lock.timing.grace,
            log_level=self._options.log_level,
            watch_deadline=watch_deadline,
            lease=lock.position,
        )
        if self._spare is not None:
            process, conn = self._spare
            self._spare = None
            try:
                send(conn, Assign(spec, slot.target, elected))
            except OSError:  # it died since the loop last looked: fork one as below
                with contextlib.suppress(OSError):
                    conn.close()
                process.close()
            else:
                return _Worker(process=process, conn=conn)
        if not self._zygote.ready:
            return None
        forked = self._zygote.fork(spec, slot.target, elected)
        if isinstance(forked, str):
            _log.warning("cannot start a worker for %s: %s", slot.label, forked)
            return None
        process, conn = forked
        return _Worker(process=process, conn=conn)

    def _send(self, worker: _Worker, message: ToWorker) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            send(worker.conn, message)

    def _stop_worker(self, worker: _Worker, why: Demoted | Shutdown) -> None:
        if worker.stopping_since is not None:
            return
        worker.stopping_since = boottime()
        self._send(worker, why)
        _signal_worker(worker, signal.SIGTERM)

    def _shutdown_workers(self) -> None:
        """Leaving: end every worker, running or stopping, and wait for them within grace."""
        workers = [worker for _lock, _slot, worker in self._workers()]
        for worker in workers:
            if worker.token is not None:
                self._stop_worker(worker, Shutdown())
            else:
                self._send(worker, Shutdown())
        grace = max((lock.timing.grace for lock in self._locks), default=0.0)
        deadline = boottime() + grace
        for worker in workers:
            worker.process.join(max(0.0, deadline - boottime()))
            if worker.process.is_alive():
                _signal_worker(worker, KILL_NOW_SIGNAL)
        for worker in workers:
            while worker.process.is_alive() and boottime() < deadline + KEEPER_WEDGED_AFTER:
                _kill_below(worker)
                worker.process.join(SWEEP_EVERY)
            if worker.process.is_alive():
                _kill_below(worker)
                kill_group(worker.process.pid, signal.SIGKILL)
                worker.process.join(1.0)
            _retire(worker)
        for lock in self._locks:
            for slot in lock.every_slot():
                slot.worker = None
