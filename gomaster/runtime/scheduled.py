"""``every()``: a job run once per tick of a schedule, on whichever node is master.

The schedule runs as an ordinary target of the name's worker: one process per tenure that
reads the run ledger, starts the due tick there (a compare-and-set on the live lease and on
the ledger as read), runs the job, records how it ended, and sleeps until the next tick. So
everything a target has, a scheduled job has: it runs only while this node is master, in a
process whose whole tree the worker ends at demotion (SIGTERM, then SIGKILL after ``grace``),
and a job that hangs, forks or ignores signals cannot outlive the tenure. A run cut short that
way stays unfinished in the ledger, and the next master's :class:`~gomaster.core.schedule.Policy`
decides what becomes of its tick.

The decision of which tick to run is :func:`gomaster.core.schedule.due`; this module does its
I/O and keeps time. Its backend connection is the target's own, opened in the target's process.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from returns.result import Failure, Result, Success

from gomaster.backends import LockBackend
from gomaster.core.record import LockRecord, Observation
from gomaster.core.schedule import Policy, RunTick, Schedule, WaitUntil, describe, due
from gomaster.core.timing import Timing
from gomaster.runtime._io import performed
from gomaster.runtime.lease import Leadership

_log = logging.getLogger("gomaster")

#: The longest a schedule sleeps before it reads the ledger again, whatever the next tick: a
#: tick far ahead is re-aimed now and then on the backend's clock, and a repaired ledger seen.
LONGEST_NAP = 60.0


@dataclass(frozen=True, slots=True)
class Tick:
    """What a scheduled job is called with: the tick it runs for and the tenure running it.

    ``at`` is the tick on the backend's clock (epoch seconds), the same on every node;
    ``leadership`` is the tenure's, with its fencing token and ``valid()``.
    """

    at: float
    leadership: Leadership

    @property
    def token(self) -> int:
        """The fencing token of the tenure that runs this tick."""
        return self.leadership.token

    @property
    def when(self) -> datetime:
        """The tick as an aware UTC datetime."""
        return datetime.fromtimestamp(self.at, UTC)

    def valid(self) -> bool:
        """True while the tenure that runs this tick still holds the lease (no I/O)."""
        return self.leadership.valid()


Job = Callable[[Tick], object]


class JobFailedError(Exception):
    """Raised by a job to count its run as failed, logged as this one line without a traceback
    (a command that exited non-zero, say)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduledTarget:
    """The target that runs ``job`` on ``schedule`` for the tenure it is called with. Picklable
    (the backend is configuration): it travels to the worker like any target."""

    job: Job
    schedule: Schedule
    policy: Policy
    backend: LockBackend
    timing: Timing

    def __call__(self, leadership: Leadership) -> None:
        """Run ticks until the tenure ends (the worker ends this process then)."""
        run_ticks(self, leadership)


@dataclass(frozen=True, slots=True)
class _Start:
    """Start ``tick`` now under ``record``; ``offset`` turns the monotonic clock into the backend's."""

    record: LockRecord
    tick: float
    offset: float


@dataclass(frozen=True, slots=True)
class _Nap:
    """Nothing to start: read the ledger again in ``seconds``."""

    seconds: float


class _Tenure:
    """One tenure's schedule, without its I/O: what to do after each read of the ledger. The
    loops of :class:`ScheduledTarget` (a worker process) and of ``gomaster.aio.every`` (an event
    loop) drive it."""

    def __init__(self, target: ScheduledTarget, leadership: Leadership) -> None:
        self.target, self.leadership = target, leadership
        self.timeout = target.timing.renew_deadline
        #: The schedule as the ledger keeps it beside each start.
        self.described = describe(target.schedule)
        #: When this tenure's own last run ended, on the backend's clock (``due``'s busy_until).
        self._busy_until: float | None = None
        self._skipped: float | None = None

    def next(self, seen: Result[Observation, object], read_at: float) -> _Start | _Nap:
        """After a read of the ledger (ended at monotonic ``read_at``): the record and the tick
        to start now, or how long to wait."""
        retry = self.target.timing.retry
        match seen:
            case Success(Observation(record=LockRecord() as record) as found) if self._ours(record):
                return self._decide(found, record, read_at)
            case Success(_):
                return _Nap(retry)  # not our lease any more: the demotion is on its way
            case Failure(problem):
                _log.warning("schedule of %r cannot read its ledger: %s", self.leadership.name, problem)
        return _Nap(retry)

    def ran(self, start: _Start) -> None:
        """Note that a run this tenure started has just ended."""
        self._busy_until = time.monotonic() + start.offset

    def _ours(self, record: LockRecord) -> bool:
        lead = self.leadership
        return (record.holder, record.token) == (lead.node_id, lead.token)

    def _decide(self, seen: Observation, record: LockRecord, read_at: float) -> _Start | _Nap:
        timing = self.target.timing
        decided = due(
            self.target.schedule,
            self.target.policy,
            record.ledger,
            seen.server_now,
            late_after=timing.ttl + timing.heartbeat,
            busy_until=self._busy_until,
        )
        match decided:
            case RunTick(tick=tick):
                return _Start(record, tick, seen.server_now - read_at)
            case WaitUntil(at=at, skipped=skipped):
                if skipped is not None and skipped != self._skipped:
                    self._skipped = skipped
                    _log.info("schedule of %r skips the tick of %s", self.leadership.name, _iso(skipped))
                nap = min(at - seen.server_now, LONGEST_NAP) - (time.monotonic() - read_at)
                return _Nap(max(0.0, nap))

    def unrecorded(self, tick: float, outcome: object) -> None:
        """Say that the end of ``tick``'s run could not be recorded (the lease went, most likely)."""
        _log.warning(
            "the end of %r's run of %s went unrecorded: %s", self.leadership.name, _iso(tick), outcome
        )


def run_ticks(target: ScheduledTarget, leadership: Leadership) -> None:
    """The worker process's loop: read, decide, start, run, record, sleep; for ever (the worker
    ends this process with the tenure)."""
    tenure, backend, name = _Tenure(target, leadership), target.backend, leadership.name
    while True:
        seen = performed(backend.observe(name, tenure.timeout))
        read_at = time.monotonic()
        match tenure.next(seen, read_at):
            case _Nap(seconds=seconds):
                time.sleep(seconds)
            case _Start(record=record, tick=tick) as start:
                started = backend.start_run(record, tick, tenure.timeout, tenure.described)
                if performed(started) != Success(True):
                    time.sleep(target.timing.retry)  # the ledger or the lease changed: read again
                    continue
                ok = _call(target.job, Tick(tick, leadership))
                tenure.ran(start)
                finished = performed(backend.finish_run(record, tick, ok, tenure.timeout))
                if finished != Success(True):
                    tenure.unrecorded(tick, finished)


async def run_ticks_in_loop(target: ScheduledTarget, leadership: Leadership) -> None:
    """``gomaster.aio.every``'s loop: :func:`run_ticks` as a task of the application's event loop.
    The job is awaited in the loop; the backend's calls, which block, run in a thread."""
    import asyncio

    tenure, backend, name = _Tenure(target, leadership), target.backend, leadership.name
    while True:
        seen = performed(await asyncio.to_thread(backend.observe, name, tenure.timeout))
        read_at = time.monotonic()
        match tenure.next(seen, read_at):
            case _Nap(seconds=seconds):
                await asyncio.sleep(seconds)
            case _Start(record=record, tick=tick) as start:
                writing = asyncio.to_thread(backend.start_run, record, tick, tenure.timeout, tenure.described)
                if performed(await writing) != Success(True):
                    await asyncio.sleep(target.timing.retry)
                    continue
                ok = await _await(target.job, Tick(tick, leadership))
                tenure.ran(start)
                finished = performed(
                    await asyncio.to_thread(backend.finish_run, record, tick, ok, tenure.timeout)
                )
                if finished != Success(True):
                    tenure.unrecorded(tick, finished)


async def _await(job: Job, tick: Tick) -> bool:
    """Run an async job once in the loop; True when it finished without raising. Cancellation
    (the end of the tenure) goes through."""
    name, at = tick.leadership.name, _iso(tick.at)
    try:
        outcome = job(tick)
        if inspect.isawaitable(outcome):
            await outcome
    except JobFailedError as failed:
        _log.warning("scheduled job of %r failed at the tick of %s: %s", name, at, failed)
        return False
    except Exception:
        _log.error("scheduled job of %r failed at the tick of %s:\n%s", name, at, traceback.format_exc())
        return False
    return True


def _call(job: Job, tick: Tick) -> bool:
    """Run the job once; True when it returned (or its awaitable finished) without raising."""
    name, at = tick.leadership.name, _iso(tick.at)
    try:
        outcome = job(tick)
        if inspect.isawaitable(outcome):
            import asyncio

            async def finish() -> object:
                return await outcome

            asyncio.run(finish())
    except JobFailedError as failed:
        _log.warning("scheduled job of %r failed at the tick of %s: %s", name, at, failed)
        return False
    except Exception:
        _log.error("scheduled job of %r failed at the tick of %s:\n%s", name, at, traceback.format_exc())
        return False
    return True


def _iso(tick: float) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
