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

from returns.result import Failure, Success

from gomaster.backends import LockBackend
from gomaster.core.record import LockRecord, Observation
from gomaster.core.schedule import Policy, RunTick, Schedule, WaitUntil, due
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
        _Runner(self, leadership).run()


class _Runner:
    """One tenure's schedule: read, decide, start, run, record, sleep."""

    def __init__(self, target: ScheduledTarget, leadership: Leadership) -> None:
        self._target, self._leadership = target, leadership
        self._timeout = target.timing.renew_deadline
        #: When this tenure's own last run ended, on the backend's clock (``due``'s busy_until).
        self._busy_until: float | None = None
        self._skipped: float | None = None

    def run(self) -> None:
        while True:
            seen = performed(self._target.backend.observe(self._leadership.name, self._timeout))
            read_at = time.monotonic()
            match seen:
                case Success(Observation(record=LockRecord() as record) as found) if self._ours(record):
                    self._step(found, record, read_at)
                case Success(_):
                    time.sleep(self._target.timing.retry)  # not our lease any more: demotion is coming
                case Failure(problem):
                    _log.warning("schedule of %r cannot read its ledger: %s", self._leadership.name, problem)
                    time.sleep(self._target.timing.retry)

    def _ours(self, record: LockRecord) -> bool:
        lead = self._leadership
        return (record.holder, record.token) == (lead.node_id, lead.token)

    def _step(self, seen: Observation, record: LockRecord, read_at: float) -> None:
        timing = self._target.timing
        decided = due(
            self._target.schedule,
            self._target.policy,
            record.ledger,
            seen.server_now,
            late_after=timing.ttl + timing.heartbeat,
            busy_until=self._busy_until,
        )
        match decided:
            case RunTick(tick=tick):
                self._run(record, tick, seen.server_now - read_at)
            case WaitUntil(at=at, skipped=skipped):
                if skipped is not None and skipped != self._skipped:
                    self._skipped = skipped
                    _log.info("schedule of %r skips the tick of %s", self._leadership.name, _iso(skipped))
                nap = min(at - seen.server_now, LONGEST_NAP) - (time.monotonic() - read_at)
                time.sleep(max(0.0, nap))

    def _run(self, record: LockRecord, tick: float, offset: float) -> None:
        """Start ``tick`` in the ledger, run the job if that went through, record its end.
        ``offset`` turns this process's monotonic clock into the backend's."""
        backend, name = self._target.backend, self._leadership.name
        started = performed(backend.start_run(record, tick, self._timeout))
        if started != Success(True):
            # The ledger or the lease changed since it was read (or the call failed): read again.
            time.sleep(self._target.timing.retry)
            return
        ok = _call(self._target.job, Tick(tick, self._leadership))
        self._busy_until = time.monotonic() + offset
        match performed(backend.finish_run(record, tick, ok, self._timeout)):
            case Success(True):
                pass
            case outcome:
                _log.warning("the end of %r's run of %s went unrecorded: %s", name, _iso(tick), outcome)


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
