"""What a failover of the store can lose, read off the server's settings and said once.

Behind replication, a failover replaces the server that kept the lease by a replica, and a
lease write the old server acknowledged but had not yet passed on is missing there: a claim or
a renewal (so a second node may claim a lease still held) or a token (so one is handed out
twice). Whether that can happen depends on the server's settings, which only the server knows,
so each backend reads them when it connects and describes them as a :class:`Durability`; a
:class:`Report` logs it once per process, and again whenever it changes (a MariaDB primary
whose semi-synchronous replication has fallen back to asynchronous, say). The pure functions
below turn each backend's settings into that description.

A step that the server did not confirm as replicated although the settings ask it to (a
PostgreSQL commit whose wait for the synchronous standby was cancelled, a Redis ``WAIT`` that
too few replicas answered) raises :class:`UnconfirmedError`: the session counts it as failed, so no
node acts on a write that a failover could take back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Durability", "Report", "UnconfirmedError", "mongodb", "mysql", "postgresql", "redis"]

_log = logging.getLogger("gomaster")

#: What a failover can do when acknowledged lease writes can be lost.
LOSES = (
    "a failover can lose lease writes it acknowledged: two masters at once, or one fencing "
    "token handed out twice"
)
KEEPS = "a failover to a replica that confirmed loses no lease write it acknowledged"
ALONE = "no replica copies it, so there is nothing to fail over to"


class UnconfirmedError(Exception):
    """The server wrote the step but did not confirm it replicated, although its settings ask
    for that: the step counts as failed (the message says what the server said)."""


@dataclass(frozen=True, slots=True)
class Durability:
    """One backend's server as far as a failover is concerned: what it was seen to do
    (``seen``, in the server's own terms), what a failover can then lose (``outcome``), and
    whether that includes acknowledged lease writes (``at_risk``: logged as a warning)."""

    where: str
    seen: str
    outcome: str
    at_risk: bool

    @property
    def line(self) -> str:
        """The one log line."""
        return f"{self.where}: {self.seen}; {self.outcome}"


class Report:
    """Logs a backend's :class:`Durability` when it is first seen in this process and when it
    changes; a reconnect that sees the same settings says nothing."""

    def __init__(self) -> None:
        self.last: Durability | None = None

    def see(self, found: Durability) -> None:
        """Log ``found`` unless it is what was said last."""
        if found == self.last:
            return
        self.last = found
        _log.log(logging.WARNING if found.at_risk else logging.INFO, "%s", found.line)


def postgresql(where: str, commit: str, standby_names: str, standbys: int, hosts: int) -> Durability:
    """PostgreSQL by ``synchronous_commit``, ``synchronous_standby_names``, the number of
    standbys streaming from it (``pg_stat_replication``) and of hosts the URL lists."""
    names = standby_names.strip()
    if not names:
        if standbys == 0 and hosts == 1:
            return Durability(where, "no standby streams from this server", ALONE, False)
        seen = (
            f"{standbys} standby(s) stream from this server and commits wait for none "
            "(synchronous_standby_names is empty)"
        )
        return Durability(where, seen, LOSES, True)
    waits = f"commits wait for synchronous_standby_names {names!r} (synchronous_commit {commit})"
    if commit in ("on", "remote_apply"):
        return Durability(where, waits, KEEPS, False)
    if commit == "remote_write":
        return Durability(where, waits, f"{KEEPS}, unless that replica's machine crashes as well", False)
    seen = f"synchronous_commit {commit}: commits do not wait for synchronous_standby_names {names!r}"
    return Durability(where, seen, LOSES, True)


def mysql(where: str, found: Mapping[str, str], hosts: int) -> Durability:
    """MySQL or MariaDB by its semi-synchronous replication variables and status (``found``,
    lower-case names, ``rpl_semi_sync_master_*`` or MySQL 8's ``rpl_semi_sync_source_*``) and
    its connected replicas (MariaDB's ``slaves_connected``; unknown on MySQL)."""

    def value(name: str) -> str:
        return found.get(f"rpl_semi_sync_master_{name}") or found.get(f"rpl_semi_sync_source_{name}") or ""

    replicas = found.get("slaves_connected")
    if value("enabled").upper() != "ON":
        if replicas == "0" and hosts == 1:
            return Durability(where, "no replica is connected to this server", ALONE, False)
        seen = "replication is asynchronous (semi-synchronous replication is off)"
        return Durability(where, seen, LOSES, True)
    timeout = value("timeout") or "?"
    if value("status").upper() != "ON":
        seen = (
            "semi-synchronous replication has fallen back to asynchronous (Rpl_semi_sync_master_status "
            f"OFF: no replica acknowledged within rpl_semi_sync_master_timeout={timeout} ms)"
        )
        return Durability(where, seen, LOSES, True)
    point = value("wait_point").upper()
    if point != "AFTER_SYNC":
        seen = (
            f"semi-synchronous replication waits {point or 'AFTER_COMMIT'}: other sessions see a "
            "commit before any replica has it (use rpl_semi_sync_master_wait_point=AFTER_SYNC)"
        )
        return Durability(where, seen, LOSES, True)
    seen = (
        "semi-synchronous replication is on (AFTER_SYNC); it falls back to asynchronous when no "
        f"replica answers within rpl_semi_sync_master_timeout={timeout} ms, which is reported"
    )
    return Durability(where, seen, KEEPS, False)


def redis(where: str, replicas: int, min_replicas: int, wait: int, sentinel: bool) -> Durability:
    """Redis by its connected replicas, ``min-replicas-to-write`` and the backend's own
    ``wait_replicas`` (a ``WAIT`` after each write step). Redis replicates asynchronously: only
    ``WAIT`` tells the writer that replicas received a write, and not that they kept it on
    disk."""
    if wait > 0:
        seen = (
            f"each lease write waits for {wait} of {replicas} connected replica(s) (WAIT; "
            f"min-replicas-to-write {min_replicas})"
        )
        if replicas < wait:
            return Durability(
                where, seen, f"every write step fails until {wait} replica(s) are connected", True
            )
        outcome = f"{KEEPS}, if it kept the write (WAIT confirms receipt, not a write to disk)"
        return Durability(where, seen, outcome, False)
    if replicas == 0 and not sentinel:
        return Durability(where, "no replica is connected to this server", ALONE, False)
    seen = f"{replicas} replica(s) copy it asynchronously and lease writes do not wait for them"
    return Durability(where, seen, f"{LOSES} (set wait_replicas=1 and min-replicas-to-write 1)", True)


def mongodb(where: str, w: str) -> Durability:
    """MongoDB by the write concern the backend's writes use (``majority`` unless the URL
    chose another)."""
    if w == "majority":
        return Durability(where, "lease writes use write concern w=majority", KEEPS, False)
    return Durability(where, f"lease writes use write concern w={w} (not majority)", LOSES, True)
