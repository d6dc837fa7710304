"""gomaster for asyncio applications: the work is a task in the application's own event loop.

The election runs in a supervisor child process, never in the loop, so a loop that stalls
cannot delay a demotion; the application reads what it says from a pipe with
``loop.add_reader``. The promise that no work runs after a demotion is kept in three layers:

1. on ``Demoted`` the work's task is cancelled;
2. a thread of the application that needs neither the loop nor the supervisor reads the lease's
   deadline from shared memory: when it passes, it cancels the task itself, and when the task
   has still not finished ``grace`` later it ends the process (``os._exit``);
3. the supervisor kills the application by pid when the work has not said it stopped within
   ``grace`` of the demotion (a process that is PID 1 of its namespace cannot be killed so:
   there layer 2 is what holds).

``overrun="warn"`` keeps layers 1 and 2's cancel but only logs where they would kill: weaker,
with the fencing token as the remaining protection.

    async def refresh(leadership: gomaster.Leadership) -> None:
        while True:
            await publish(token=leadership.token)
            await asyncio.sleep(5)

    await gomaster.aio.supervise(refresh, backend="postgresql://app@db/app", name="refresh")
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

import multiprocess

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.events import Demoted, Elected
from gomaster.core.record import LockRecord
from gomaster.core.schedule import Busy, CutShort, Missed, Policy
from gomaster.core.timing import Timing
from gomaster.runtime.console import logging_configured
from gomaster.runtime.elector import HolderChanged, Watched
from gomaster.runtime.fds import hold_standard_fds
from gomaster.runtime.guard import EXIT_OVERRUN, Guard
from gomaster.runtime.host import ANSWER_TIMEOUT
from gomaster.runtime.hosted import supervisor_main
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.names import STARTED
from gomaster.runtime.protocol import (
    Failed,
    Logged,
    Member,
    Ready,
    Resign,
    RoleChanged,
    Seen,
    Stop,
    WorkStopped,
    relog,
)
from gomaster.runtime.scheduled import Tick
from gomaster.runtime.supervise import check_config, watcher
from gomaster.runtime.supervisor import InApp, Overrun, backoff

__all__ = ["EXIT_OVERRUN", "Demoted", "Elected", "Master", "NewLeader", "Overrun", "every", "supervise"]

_log = logging.getLogger("gomaster")

#: Stopping waits this long beyond the timings for the supervisor to end, then kills it.
STOP_SLACK = 5.0

Work: TypeAlias = Callable[[Leadership], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class NewLeader:
    """The holder this node sees changed (``record`` None: no record yet, or released)."""

    record: LockRecord | None


Event: TypeAlias = Elected | Demoted | NewLeader
_CLOSED = object()


def _check_work(work: object) -> Work:
    """``work`` must be an async function (or a callable returning an awaitable)."""
    if asyncio.iscoroutine(work):
        raise TypeError(
            "gomaster.aio takes the async function itself, not a coroutine object: pass work, not work()"
        )
    if not callable(work):
        raise TypeError(
            f"gomaster.aio work must be an async function taking a Leadership, not {type(work).__name__}"
        )
    label = getattr(work, "__name__", "")
    if inspect.isfunction(work) and label != "<lambda>" and not inspect.iscoroutinefunction(work):
        raise TypeError(
            f"{label!r} is a plain function: gomaster.aio runs async functions in your event "
            "loop; make it `async def`, or run sync work in worker processes with gomaster.supervise()"
        )
    checked: Work = work
    return checked


class Master:
    """A node of the election of ``name``, for an asyncio application.

    ``async with gomaster.aio.Master(backend, name="jobs") as m:`` joins on enter and leaves
    (releasing the lease) on exit. With ``work``, the node runs ``work(leadership)`` as a task in
    this loop whenever it is master and cancels it on demotion, with the stop enforced (see the
    module docstring); without, it only tells the application (:meth:`is_master`,
    :meth:`wait_elected`, :meth:`events`), and the application gates its own work on
    ``leadership.valid()``. Work that raises is restarted with backoff while this node stays
    master; work that returns is done until the next tenure.
    """

    def __init__(
        self,
        backend: LockBackend | str | None = None,
        *,
        name: str = "default",
        work: Work | None = None,
        timing: Timing | None = None,
        version: str = "",
        overrun: Overrun = "kill",
        metrics: Any = None,
    ) -> None:
        self._name, self._timing = check_config(name, timing, version)
        if overrun not in ("kill", "warn"):
            raise ValueError(f"overrun must be 'kill' or 'warn', not {overrun!r}")
        self._work = _check_work(work) if work is not None else None
        self._backend = resolve_backend(backend)
        self._version = version
        self._overrun: Overrun = overrun
        self._watch: Callable[[Watched], None] | None = watcher(metrics, None)
        self._id = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._process: Any = None
        self._lease: SharedLease | None = None
        self._guard: Guard | None = None
        self._ready: asyncio.Future[None] | None = None
        self._gone: asyncio.Event | None = None
        self._elected: asyncio.Event | None = None
        self._leadership: Leadership | None = None
        self._subscribers: list[asyncio.Queue[object]] = []
        self._task: asyncio.Task[object] | None = None
        self._running_token = 0
        #: When the supervisor announced the last role change (``RoleChanged.at``), for benches.
        self._announced_at = 0.0
        self._restart: asyncio.TimerHandle | None = None
        self._failures = 0
        self._started = False
        self._stopped = False
        self.error: BaseException | None = None

    # -- what the application sees --------------------------------------------------------------

    @property
    def id(self) -> str:
        """This start's node id; "" before start."""
        return self._id

    @property
    def leadership(self) -> Leadership | None:
        """The current tenure while master, else None."""
        return self._leadership

    @property
    def supervisor_pid(self) -> int | None:
        """The pid of this node's supervisor process (for monitoring it); None before start."""
        return None if self._process is None else int(self._process.pid)

    def is_master(self) -> bool:
        """True while this node is master, as its supervisor last said and its lease confirms."""
        return self._leadership is not None and self._leadership.valid()

    async def wait_elected(self) -> Leadership:
        """Wait until this node is master; its tenure. ``RuntimeError`` if the node stops first."""
        if self._elected is None or self._gone is None:
            raise RuntimeError("this Master is not running: use `async with` or await start() first")
        while True:
            leadership = self._leadership
            if leadership is not None:
                return leadership
            if self._gone.is_set():
                raise RuntimeError("this Master stopped before it was elected")
            elected, gone = (
                asyncio.ensure_future(self._elected.wait()),
                asyncio.ensure_future(self._gone.wait()),
            )
            try:
                await asyncio.wait({elected, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                elected.cancel()
                gone.cancel()

    def resign(self) -> None:
        """Step down (the work is cancelled, the lease released); contend again after one ttl."""
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(Resign(self._name))

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on: ``Elected``, ``Demoted``, ``NewLeader``; ends when the node stops
        (at once when it has stopped already)."""
        if self._gone is None:
            raise RuntimeError("this Master is not running: use `async with` or await start() first")
        if self._gone.is_set():
            return
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                event = await queue.get()
                if event is _CLOSED:
                    return
                assert isinstance(event, Elected | Demoted | NewLeader)
                yield event
        finally:
            self._subscribers.remove(queue)

    # -- start and stop ----------------------------------------------------------------------------

    async def __aenter__(self) -> Master:
        await self.start()
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawn the supervisor process and join the election; returns once it runs. Must be
        awaited in the loop the work runs in; the supervisor dies with this loop's thread."""
        loop = asyncio.get_running_loop()
        if self._started:
            raise RuntimeError("this Master was already started; create a new one to start again")
        self._started = True
        STARTED.take(self._backend.url, [self._name])
        try:
            await self._spawn(loop)
        except BaseException:
            await self._close()
            raise

    async def _spawn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._id = uuid.uuid4().hex
        self._ready, self._gone, self._elected = loop.create_future(), asyncio.Event(), asyncio.Event()
        context = multiprocess.get_context("spawn")
        self._lease = SharedLease(1)
        in_app = InApp(os.getpid(), self._overrun) if self._work is not None else None
        member = Member(
            name=self._name, node_id=self._id, timing=self._timing, version=self._version, in_app=in_app
        )
        hold_standard_fds()  # the pipe must not land on a closed fd 0-2 of the application
        mine, theirs = context.Pipe()
        process = context.Process(
            target=supervisor_main,
            args=(theirs, self._backend, member, not logging_configured(), os.getpid(), self._lease),
            name="gomaster-supervisor",
        )
        process.start()  # on the loop's thread: the parent-death signal follows this thread
        theirs.close()
        self._conn, self._process = mine, process
        if self._work is not None:
            self._guard = Guard(
                self._lease.at(0),
                self._timing.grace,
                self._overrun,
                self._cancel_from_guard,
                self._resume_from_guard,
            )
        loop.add_reader(mine.fileno(), self._readable)
        await asyncio.wait_for(asyncio.shield(self._ready), ANSWER_TIMEOUT)

    async def stop(self) -> None:
        """Leave the election: cancel the work, release the lease, end the supervisor process.
        Safe to call more than once."""
        if self._stopped or self._process is None:
            return
        self._stopped = True
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(Stop())
        timing = self._timing
        limit = 2 * timing.grace + timing.renew_deadline + STOP_SLACK
        assert self._gone is not None
        try:
            await asyncio.wait_for(self._gone.wait(), limit)
        except TimeoutError:
            _log.error("the gomaster supervisor did not stop within %.1f s: killing it", limit)
            with contextlib.suppress(OSError, ValueError):
                self._process.kill()
        finally:
            await self._close()

    async def _close(self) -> None:
        loop, conn, process = self._loop, self._conn, self._process
        if loop is not None and conn is not None:
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            with contextlib.suppress(OSError):
                conn.close()
        self._conn = None
        self._ended("the node stopped")
        if process is not None:
            with contextlib.suppress(OSError, ValueError):
                await asyncio.get_running_loop().run_in_executor(None, process.join, 5.0)
        if self._guard is not None:
            self._guard.close()
        STARTED.give_back(self._backend.url, [self._name])

    # -- the pipe --------------------------------------------------------------------------------

    def _readable(self) -> None:
        conn = self._conn
        try:
            while conn is not None and conn.poll():
                self._heard(conn.recv())
        except (EOFError, OSError):
            if self._loop is not None and conn is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(conn.fileno())
            self._ended("the gomaster supervisor process ended")

    def _heard(self, message: object) -> None:
        match message:
            case Ready():
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            case RoleChanged(event=Elected() as elected, at=at):
                self._announced_at = at
                assert self._lease is not None and self._elected is not None
                self._leadership = Leadership(
                    elected.name, elected.node_id, elected.token, elected.since, self._lease.at(0)
                )
                self._elected.set()
                self._failures = 0
                self._publish(elected)
                self._start_work()
            case RoleChanged(event=Demoted() as demoted, at=at):
                self._announced_at = at
                self._lose(demoted)
            case Seen(seen=seen):
                if self._watch is not None:
                    try:
                        self._watch(seen)
                    except Exception:
                        _log.exception("metrics raised")
                if isinstance(seen, HolderChanged):
                    record = seen.record
                    self._publish(NewLeader(None if record is None or record.released else record))
            case Failed(text=text):
                _log.error("%s", text)
            case Logged():
                relog(message)
            case _:
                pass

    def _publish(self, event: object) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _lose(self, demoted: Demoted | None) -> None:
        """Mastership ended: cancel the work and, once it has finished, say so."""
        self._leadership = None
        if self._elected is not None:
            self._elected.clear()
        if self._restart is not None:
            self._restart.cancel()
            self._restart = None
        if demoted is not None:
            self._publish(demoted)
        task = self._task
        if task is None or task.done():
            if demoted is not None:
                self._say_stopped(demoted.token)
            return
        if self._guard is not None and demoted is not None:
            self._guard.stopping(demoted.token)
        task.cancel()

    def _ended(self, why: str) -> None:
        """No more news will come: no more mastership either."""
        if self._gone is None or self._gone.is_set():
            return
        self._lose(None)
        self._gone.set()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(RuntimeError(why))
        self._publish(_CLOSED)

    def _cancel_from_guard(self, token: int) -> None:
        """On the guard's thread: the lease of ``token`` ran out; cancel its task in the loop (if
        the loop is blocked, the guard ends the process at grace)."""

        def cancel() -> None:
            task = self._task
            if task is not None and self._running_token == token:
                task.cancel()

        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(cancel)

    def _resume_from_guard(self, token: int) -> None:
        """On the guard's thread: the lease of ``token`` came back after the guard stopped its
        work (a renewal published late). Start the work again, unless the tenure ended meanwhile."""

        def resume() -> None:
            current = self._leadership
            if current is not None and current.token == token and self._restart is None:
                self._start_work()

        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(resume)

    def _say_stopped(self, token: int) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(WorkStopped(self._name, token))

    # -- the work --------------------------------------------------------------------------------

    def _start_work(self) -> None:
        leadership, work = self._leadership, self._work
        if leadership is None or work is None or (self._task is not None and not self._task.done()):
            return
        self._restart = None
        try:
            running = work(leadership)
        except Exception as exc:
            self._work_failed(leadership.token, exc)
            return
        if not inspect.isawaitable(running):
            self.error = TypeError(
                f"work returned {type(running).__name__}, not an awaitable: gomaster.aio runs async "
                "functions; run sync work in worker processes with gomaster.supervise()"
            )
            _log.error("%s", self.error)
            self._say_stopped(leadership.token)
            return
        task: asyncio.Task[object] = asyncio.ensure_future(running)
        self._task, self._running_token = task, leadership.token
        if self._guard is not None:
            self._guard.watch(leadership.token)
        task.add_done_callback(lambda done: self._work_done(leadership.token, done))

    def _work_done(self, token: int, task: asyncio.Task[object]) -> None:
        if self._task is task:
            self._task = None
        if self._guard is not None:
            self._guard.settle(token)
        current = self._leadership
        if current is None or current.token != token:
            self._say_stopped(token)  # the demotion's stop, confirmed
            return
        if task.cancelled():
            return  # cancelled by the guard: a demotion follows, or the lease comes back (resumed)
        error = task.exception()
        if error is not None:
            self._work_failed(token, error)
        else:
            _log.info("the work of %r finished under token %d", self._name, token)

    def _work_failed(self, token: int, error: BaseException) -> None:
        self._failures += 1
        delay = backoff(self._failures)
        _log.error(
            "the work of %r raised under token %d (%d in a row); restarting in %.1f s",
            self._name,
            token,
            self._failures,
            delay,
            exc_info=error,
        )
        if self._loop is not None:
            self._restart = self._loop.call_later(delay, self._start_work)


async def supervise(
    work: Work,
    *,
    backend: LockBackend | str | None = None,
    name: str = "default",
    timing: Timing | None = None,
    version: str = "",
    overrun: Overrun = "kill",
    metrics: Any = None,
) -> None:
    """Run ``work(leadership)`` as a task in this event loop whenever this node is master of
    ``name``, and cancel it on demotion (with the stop enforced: see the module docstring).
    Runs until cancelled: then it cancels the work, releases the lease and re-raises the
    cancellation. Raises ``RuntimeError`` if the supervisor process ends by itself."""
    async with Master(
        backend, name=name, work=work, timing=timing, version=version, overrun=overrun, metrics=metrics
    ) as master:
        assert master._gone is not None
        await master._gone.wait()
        raise RuntimeError("the gomaster supervisor process ended unexpectedly")


async def every(
    period: str | float | None = None,
    job: Callable[[Tick], Awaitable[object]] | None = None,
    *,
    cron: str | None = None,
    tz: str = "UTC",
    backend: LockBackend | str | None = None,
    name: str = "default",
    timing: Timing | None = None,
    version: str = "",
    missed: Missed = "latest",
    cut_short: CutShort = "done",
    busy: Busy = "wait",
    overrun: Overrun = "kill",
) -> None:
    """:func:`gomaster.every` for an asyncio application: ``job`` (an ``async def`` taking a
    :class:`gomaster.Tick`) is awaited in this event loop once per tick of the schedule, on
    whichever node is master of ``name``, each tick's run started on at most one node. The
    schedule runs as :func:`supervise`'s work, so demotion cancels it and the stop is enforced
    as for any work here. Runs until cancelled, as :func:`supervise` does."""
    from gomaster.runtime.every import checked_schedule
    from gomaster.runtime.scheduled import ScheduledTarget, run_ticks_in_loop

    if job is None:
        raise TypeError("gomaster.aio.every() needs a job: an async function called with a gomaster.Tick")
    _check_work(job)  # the same rules as work: an async function, not a coroutine object
    timing = check_config(name, timing, version)[1]
    target = ScheduledTarget(
        job=job,
        schedule=checked_schedule(period, cron, tz, timing),
        policy=Policy(missed=missed, cut_short=cut_short, busy=busy),
        backend=resolve_backend(backend),
        timing=timing,
    )

    async def ticks(leadership: Leadership) -> None:
        await run_ticks_in_loop(target, leadership)

    await supervise(ticks, backend=target.backend, name=name, timing=timing, version=version, overrun=overrun)
