"""``gomaster run --once-per PERIOD``: when every replica's own cron fires the same job, it runs on
one of them once per period, and the others exit 0 without running it.

A period is a tick of :class:`~gomaster.core.schedule.Every` on the backend's clock (multiples
of PERIOD since the Unix epoch: ``24h`` starts at 00:00 UTC), and the lock record's run ledger
says which period last ran. Three steps keep it to one run:

- before joining, and every retry while it waits, a node reads the ledger: a period already
  started here or elsewhere ends it with status 0 (:func:`already_run`);
- the master's worker starts the period in the ledger with a compare-and-set on its lease and
  the ledger it read, before CMD exists (:func:`start_period`): two masters of one period, one
  after the other, cannot both win it;
- when CMD exits, the supervisor records how it ended while the lease is still held
  (:func:`finish_period`).

A period started counts as run, even when its master was demoted before CMD finished: CMD may
have done its work, and running it twice is what ``--once-per`` exists to prevent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from returns.io import IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends import LockBackend
from gomaster.core.errors import BackendError
from gomaster.core.record import EMPTY_LEDGER, LockRecord, MalformedRecord, Observation
from gomaster.core.schedule import Every, describe, latest_tick
from gomaster.runtime._io import performed

_log = logging.getLogger("gomaster")


@dataclass(frozen=True, slots=True)
class AlreadyRun:
    """The period that began at ``tick`` was started by the tenure with ``token``."""

    tick: float
    token: int

    def __str__(self) -> str:
        began = datetime.fromtimestamp(self.tick, UTC).isoformat(timespec="milliseconds")
        return f"the period from {began} already ran, under token {self.token}: not running CMD"


@dataclass(frozen=True, slots=True)
class Unsure:
    """The ledger could not be read or written: whether the period ran is unknown."""

    problem: str

    def __str__(self) -> str:
        return f"cannot tell whether this period ran: {self.problem}"


def already_run(seen: Observation, period: Every) -> AlreadyRun | None:
    """The current period's run, if the ledger shows one started."""
    tick = latest_tick(period, seen.server_now)
    ledger = seen.record.ledger if seen.record is not None else EMPTY_LEDGER
    if tick is not None and ledger.started is not None and ledger.started >= tick:
        return AlreadyRun(tick, ledger.token)
    return None


def look(backend: LockBackend, name: str, period: Every, timeout: float) -> Result[AlreadyRun | None, Unsure]:
    """:func:`already_run`, read from the backend."""
    seen = performed(backend.observe(name, timeout))
    return seen.map(lambda found: already_run(found, period)).alt(lambda error: Unsure(str(error)))


def start_period(
    backend: LockBackend, name: str, node_id: str, token: int, period: Every, timeout: float
) -> Result[float, AlreadyRun | Unsure]:
    """The worker's step before CMD: start the current period in the ledger, under this tenure's
    lease (``node_id``, ``token``); the period's tick, or why CMD must not run."""

    def start(seen: Observation) -> Result[float, AlreadyRun | Unsure]:
        record, tick = seen.record, latest_tick(period, seen.server_now)
        done = already_run(seen, period)
        if done is not None:
            return Failure(done)
        if record is None or (record.holder, record.token) != (node_id, token) or tick is None:
            return Failure(Unsure(f"this node's lease (token {token}) is not the one in the backend"))
        writing = backend.start_run(record, tick, timeout, describe(period))
        started: Result[bool, AlreadyRun | Unsure] = performed(writing).alt(lambda error: Unsure(str(error)))
        return started.bind(lambda won: _won(won, tick))

    read: Result[Observation, AlreadyRun | Unsure] = performed(backend.observe(name, timeout)).alt(
        lambda error: Unsure(str(error))
    )
    return read.bind(start)


def _won(won: bool, tick: float) -> Result[float, AlreadyRun | Unsure]:
    if won:
        return Success(tick)
    return Failure(Unsure("the ledger or the lease changed while this node started the period"))


def finish_period(
    backend: LockBackend, name: str, node_id: str, ok: bool, timeout: float
) -> IOResult[bool, str]:
    """The supervisor's step when CMD exits: record the end of the period this node's tenure
    started, if it started one and still holds the lease; True when recorded."""

    def finish(seen: Observation) -> IOResult[bool, BackendError | MalformedRecord]:
        match _started_here(seen.record, node_id):
            case (record, tick):
                return backend.finish_run(record, tick, ok, timeout)
            case None:
                return IOSuccess(False)

    return backend.observe(name, timeout).bind(finish).alt(str)


def _started_here(record: LockRecord | None, node_id: str) -> tuple[LockRecord, float] | None:
    """The record and the tick of its last run, when the lease is this node's and its tenure
    started that run and has not finished it."""
    if record is None or record.holder != node_id or record.ledger.token != record.token:
        return None
    tick = record.ledger.started
    return (record, tick) if tick is not None and record.ledger.unfinished else None


#: Status of a worker whose period gate could not tell whether the period ran.
EXIT_UNSURE = 1


@dataclass(frozen=True, slots=True)
class PeriodGate:
    """The worker-side gate of ``--once-per``: start the period, or end the worker without CMD
    (status 0 when the period already ran, :data:`EXIT_UNSURE` when that is unknown)."""

    backend: LockBackend
    name: str
    period: Every
    timeout: float

    def __call__(self, node_id: str, token: int) -> Result[dict[str, str], tuple[str, int]]:
        """CMD's extra environment (``GOMASTER_TICK``), or a message and the worker's status."""
        started = start_period(self.backend, self.name, node_id, token, self.period, self.timeout)
        self.backend.close()  # nothing of the driver may reach CMD
        return started.map(lambda tick: {"GOMASTER_TICK": f"{tick:.3f}"}).alt(_refusal)


def _refusal(why: AlreadyRun | Unsure) -> tuple[str, int]:
    return (str(why), 0 if isinstance(why, AlreadyRun) else EXIT_UNSURE)
