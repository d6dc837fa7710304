"""``every()``: the front door for a job on a schedule (see :mod:`gomaster.runtime.scheduled`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from returns.result import Failure, Result

from gomaster.backends import LockBackend, resolve_backend
from gomaster.core.schedule import Busy, CutShort, Missed, Policy, Schedule
from gomaster.core.schedule import cron as checked_cron
from gomaster.core.schedule import every as checked_every
from gomaster.core.timing import Timing
from gomaster.runtime.scheduled import ScheduledTarget, Tick
from gomaster.runtime.supervise import check_config, supervise


@dataclass(frozen=True, slots=True, kw_only=True)
class On:
    """One lock name's schedule for :func:`schedules`: ``job`` at each tick of ``period`` or of
    ``cron`` in ``tz``, with the policies :func:`every` describes."""

    job: Callable[[Tick], object]
    period: str | float | None = None
    cron: str | None = None
    tz: str = "UTC"
    missed: Missed = "latest"
    cut_short: CutShort = "done"
    busy: Busy = "wait"


def every(
    period: str | float | None = None,
    job: Callable[[Tick], object] | None = None,
    *,
    cron: str | None = None,
    tz: str = "UTC",
    backend: LockBackend | str | None = None,
    name: str | None = None,
    timing: Timing | None = None,
    version: str = "",
    missed: Missed = "latest",
    cut_short: CutShort = "done",
    busy: Busy = "wait",
) -> None:
    """Run ``job`` once per tick of a schedule, on whichever node is master of ``name``.

    The schedule is ``period`` (seconds, or a duration such as ``"90s"``, ``"5m"``, ``"1h"``:
    ticks at every multiple of it since the Unix epoch) or ``cron`` (a five-field expression)
    in time zone ``tz``; ticks are instants on the backend's clock, the same for every node.
    Each tick's run starts on at most one node, ever: the lock record's run ledger says which
    tick ran last, and only the live master can write it. ``job`` is called with a
    :class:`~gomaster.runtime.scheduled.Tick` in the name's worker process (an ``async def``
    job runs in an event loop of its own); demotion ends it, as it ends any target.

    The policies say what happens to ticks that did not run at their time: ``missed`` ticks
    from while no node was master (``"latest"`` runs the latest of them once, ``"skip"`` skips
    them); a run ``cut_short`` by a failover (``"done"`` counts it run, ``"rerun"`` runs its
    tick again on the new master, which may run it twice); ticks that come while a run is
    still ``busy`` (``"wait"`` runs the latest once it ends, ``"skip"`` skips them; never two
    runs of one name at once). Blocks like :func:`gomaster.supervise`, until SIGTERM or SIGINT.
    """
    if job is None or not callable(job) or inspect.iscoroutine(job):
        fix = " (pass the function, not the coroutine it returns)" if inspect.iscoroutine(job) else ""
        raise TypeError(
            f"every() needs a job, a function called with a gomaster Tick at each tick, not "
            f"{type(job).__name__}{fix}"
        )
    on = On(job=job, period=period, cron=cron, tz=tz, missed=missed, cut_short=cut_short, busy=busy)
    schedules({"default" if name is None else name: on}, backend=backend, timing=timing, version=version)


def schedules(
    jobs: Mapping[str, On],
    *,
    backend: LockBackend | str | None = None,
    timing: Timing | None = None,
    version: str = "",
) -> None:
    """Several schedules in one supervisor process: ``{"sweep": On(period="5m", job=sweep),
    "report": On(cron="0 3 * * *", tz="Europe/Paris", job=report)}``. Each lock name is an
    election and a ledger of its own, as with :func:`every`; every schedule is checked before
    anything starts. Blocks until SIGTERM or SIGINT."""
    if not jobs:
        raise ValueError("schedules() needs at least one lock name and its On(...)")
    checked = check_config(next(iter(jobs)), timing, version)[1]
    store = resolve_backend(backend)
    targets = {name: _target(name, on, store, checked) for name, on in jobs.items()}
    supervise(targets, backend=store, timing=checked, version=version)


def _target(name: str, on: object, store: LockBackend, timing: Timing) -> ScheduledTarget:
    """``name``'s schedule as its target, checked."""
    if not isinstance(on, On):
        raise TypeError(f"the schedule of lock name {name!r} must be a gomaster.On, not {type(on).__name__}")
    return ScheduledTarget(
        job=on.job,
        schedule=checked_schedule(on.period, on.cron, on.tz, timing),
        policy=Policy(missed=on.missed, cut_short=on.cut_short, busy=on.busy),
        backend=store,
        timing=timing,
    )


def _schedule(
    period: str | float | None, expression: str | None, tz: str, timing: Timing
) -> Result[Schedule, str]:
    """The one schedule given, checked."""
    if expression is not None and period is None:
        return checked_cron(expression, tz).map(_as_schedule)
    if period is not None and expression is None:
        if tz != "UTC":
            return Failure("tz applies to a cron expression only: a period ticks at multiples of itself")
        return checked_every(period, shortest=timing.heartbeat).map(_as_schedule)
    return Failure(
        "every() takes a period, every('5m', job), or a cron expression, "
        "every(job=job, cron='0 3 * * *'): exactly one of them"
    )


def _as_schedule(schedule: Schedule) -> Schedule:
    return schedule


def checked_schedule(period: str | float | None, cron: str | None, tz: str, timing: Timing) -> Schedule:
    """The schedule ``every()`` was given, or a ``ValueError`` that says what to fix."""
    checked = _schedule(period, cron, tz, timing)
    if isinstance(checked, Failure):
        raise ValueError(checked.failure())
    found: Schedule = checked.unwrap()
    return found
