"""The typed status snapshot that ``Master.status()`` and ``gomaster status`` report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal, TypeAlias

from gomaster.core.record import LockRecord
from gomaster.core.schedule import described, next_tick

#: How a scheduled name's last run stands: none yet, running (or cut short by a failover:
#: only its own master can tell), or ended well or not.
RunState: TypeAlias = Literal["none", "unfinished", "ok", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """Who is master of ``name`` as this node last saw it, with times by the backend's clock.

    ``expires_in`` and ``renewed_ago`` are seconds relative to the backend's clock at the moment
    the snapshot was taken. ``holder`` is "" when the lock is free or released.
    """

    name: str
    node_id: str
    is_master: bool
    backend: str
    holder: str = ""
    version: str = ""
    host: str = ""
    pid: int = 0
    token: int = 0
    since: float | None = None
    renewed_at: float | None = None
    expires_at: float | None = None
    expires_in: float | None = None
    renewed_ago: float | None = None
    #: The schedule's run ledger: the tick (backend clock) whose run started last, the token of
    #: the tenure that started it, and how that run stands.
    last_run: float | None = None
    last_run_token: int = 0
    last_run_state: RunState = "none"
    #: The schedule that started the last run (``every 300000ms``, ``cron 0 3 * * * UTC``) and
    #: its next tick after the snapshot, on the backend's clock.
    schedule: str = ""
    next_run: float | None = None
    error: str | None = None

    @property
    def has_master(self) -> bool:
        """True when some node held a live lease at the snapshot."""
        return bool(self.holder) and (self.expires_in or 0.0) > 0

    def as_dict(self) -> dict[str, object]:
        """Plain fields, for JSON output."""
        fields = asdict(self)
        fields["has_master"] = self.has_master
        return fields


def status_from_record(
    *,
    name: str,
    node_id: str,
    is_master: bool,
    backend: str,
    record: LockRecord | None,
    server_now: float | None,
    error: str | None = None,
) -> Status:
    """Build a snapshot from the last record seen and the backend's clock at that moment."""
    unseen = Status(name=name, node_id=node_id, is_master=is_master, backend=backend, error=error)
    if record is None or server_now is None:
        return unseen
    return replace(
        unseen,
        holder=record.holder,
        version=record.version,
        host=record.host,
        pid=record.pid,
        token=record.token,
        since=record.acquired_at,
        renewed_at=record.renewed_at,
        expires_at=record.expires_at,
        expires_in=max(0.0, record.expires_at - server_now) if record.holder else 0.0,
        renewed_ago=max(0.0, server_now - record.renewed_at),
        last_run=record.ledger.started,
        last_run_token=record.ledger.token,
        last_run_state=_run_state(record),
        schedule=record.ledger.schedule,
        next_run=_next_run(record, server_now),
    )


def _next_run(record: LockRecord, server_now: float) -> float | None:
    """The next tick of the schedule the ledger names, if it names one this version reads."""
    found = described(record.ledger.schedule)
    return None if found is None else next_tick(found, server_now)


def _run_state(record: LockRecord) -> RunState:
    ledger = record.ledger
    if ledger.started is None:
        return "none"
    if ledger.unfinished:
        return "unfinished"
    return "ok" if ledger.ok else "failed"
