"""The store model: what each backend statement does to a table of lock records, as pure functions.

These are the specification every real backend's statements implement. The deterministic
simulation applies them at simulated times; ``memory://`` (:mod:`gomaster.backends.memory`)
applies them under a lock with a real clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TypeGuard

from returns.result import Failure, Result, Success

from gomaster.core.decide import Claim
from gomaster.core.errors import Conflict, Lost
from gomaster.core.record import EMPTY_LEDGER, Ledger, LockRecord, tick_millis

Table = Mapping[str, LockRecord]


def _new_record(claim: Claim, now: float, ledger: Ledger = EMPTY_LEDGER) -> LockRecord:
    """The record a claim writes; a takeover keeps the row's run ledger."""
    return LockRecord(
        name=claim.name,
        holder=claim.node.node_id,
        version=claim.node.version,
        token=claim.token,
        acquired_at=now,
        renewed_at=now,
        expires_at=now + claim.ttl,
        host=claim.node.host,
        pid=claim.node.pid,
        ledger=ledger,
    )


def _same_lease(current: LockRecord | None, seen: LockRecord) -> TypeGuard[LockRecord]:
    """True when ``current`` is still the lease ``seen`` showed: the same holder and token."""
    return current is not None and (current.holder, current.token) == (seen.holder, seen.token)


def claim_in(table: Table, claim: Claim, now: float) -> Result[LockRecord, Conflict]:
    """The claim statement: insert if absent, or take over the exact expected, expired row."""
    current = table.get(claim.name)
    expected = claim.expected
    if expected is None:
        return Failure(Conflict(claim.name)) if current is not None else Success(_new_record(claim, now))
    if (
        not _same_lease(current, expected)
        or not current.claimable_at(now)
        or claim.token != current.token + 1
    ):
        return Failure(Conflict(claim.name))
    return Success(_new_record(claim, now, current.ledger))


def renew_in(table: Table, record: LockRecord, ttl: float, now: float) -> Result[LockRecord, Lost]:
    """The renew statement: extend only our own lease, and only while it is still live."""
    current = table.get(record.name)
    if not _same_lease(current, record) or not current.live_at(now):
        return Failure(Lost(record))
    return Success(replace(current, renewed_at=now, expires_at=now + ttl))


def release_in(table: Table, record: LockRecord, now: float) -> LockRecord | None:
    """The release statement: the new row if ``record`` was still ours, else None (no change)."""
    current = table.get(record.name)
    if not _same_lease(current, record) or current.released:
        return None
    return replace(current, holder="", expires_at=min(current.expires_at, now))


def revoke_in(table: Table, record: LockRecord) -> LockRecord | None:
    """The operator's revoke: the holder loses the lease (its renewals fail) but the expiry
    stays, so no successor can claim it before the holder's own deadline has stopped its work."""
    current = table.get(record.name)
    if not _same_lease(current, record) or current.released:
        return None
    return replace(current, holder="")


def start_run_in(
    table: Table, record: LockRecord, tick: float, now: float, schedule: str = ""
) -> LockRecord | None:
    """The start of a scheduled run: the ledger records ``tick`` as started by ``record``'s token,
    only while the lease is ``record``'s and live and the ledger is still ``record.ledger``;
    the new row, or None (no change)."""
    current = table.get(record.name)
    if (
        not _same_lease(current, record)
        or not current.live_at(now)
        or current.ledger.stored() != record.ledger.stored()
    ):
        return None
    ledger = replace(current.ledger, started=tick, token=record.token, schedule=schedule)
    return replace(current, ledger=ledger)


def finish_run_in(table: Table, record: LockRecord, tick: float, ok: bool, now: float) -> LockRecord | None:
    """The end of a scheduled run: recorded only while the lease is ``record``'s and live and the
    ledger's last start is ``tick`` by ``record``'s token; the new row, or None (no change)."""
    current = table.get(record.name)
    if not _same_lease(current, record) or not current.live_at(now):
        return None
    ledger = current.ledger
    if tick_millis(ledger.started) != tick_millis(tick) or ledger.token != record.token:
        return None
    return replace(current, ledger=replace(ledger, finished=tick, ok=ok))


def repair_in(table: Table, name: str, hold: float, token_floor: int, now: float) -> LockRecord | None:
    """The repair statement: the row rewritten as released until ``now + hold``, its token kept
    (a model record's token is always valid) unless ``token_floor`` is higher, and its run
    ledger kept (a model ledger is always valid too); None if absent."""
    current = table.get(name)
    if current is None:
        return None
    return replace(
        current,
        holder="",
        version="",
        host="",
        pid=0,
        token=max(current.token, token_floor),
        acquired_at=now,
        renewed_at=now,
        expires_at=now + hold,
    )
