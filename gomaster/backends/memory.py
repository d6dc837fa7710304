"""The model store: the backend semantics as pure functions, plus an in-process backend on them.

The pure functions (``claim_in``, ``renew_in``, ...) are the specification every real backend's
statements implement; the deterministic simulation drives them with simulated time, and
:class:`MemoryBackend` wraps them with a lock and a clock for in-process use and the contract
suite. A memory backend cannot be shared between processes: use ``sqlite://`` for that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from returns.io import IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import LockRecord, MalformedRecord, Observation

Table = Mapping[str, LockRecord]


def _new_record(claim: Claim, now: float) -> LockRecord:
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
    )


def claim_in(table: Table, claim: Claim, now: float) -> Result[LockRecord, Conflict]:
    """The claim statement: insert if absent, or take over the exact expected, expired row."""
    current = table.get(claim.name)
    expected = claim.expected
    if expected is None:
        return Failure(Conflict(claim.name)) if current is not None else Success(_new_record(claim, now))
    if (
        current is None
        or current.token != expected.token
        or current.holder != expected.holder
        or not current.claimable_at(now)
        or claim.token != current.token + 1
    ):
        return Failure(Conflict(claim.name))
    return Success(_new_record(claim, now))


def renew_in(table: Table, record: LockRecord, ttl: float, now: float) -> Result[LockRecord, Lost]:
    """The renew statement: extend only our own lease, and only while it is still live."""
    current = table.get(record.name)
    if (
        current is None
        or current.holder != record.holder
        or current.token != record.token
        or not current.live_at(now)
    ):
        return Failure(Lost(record))
    return Success(replace(current, renewed_at=now, expires_at=now + ttl))


def release_in(table: Table, record: LockRecord, now: float) -> LockRecord | None:
    """The release statement: the new row if ``record`` was still ours, else None (no change)."""
    current = table.get(record.name)
    if (
        current is None
        or current.released
        or current.holder != record.holder
        or current.token != record.token
    ):
        return None
    return replace(current, holder="", expires_at=min(current.expires_at, now))


def revoke_in(table: Table, record: LockRecord) -> LockRecord | None:
    """The operator's revoke: the holder loses the lease (its renewals fail) but the expiry
    stays, so no successor can claim it before the holder's own deadline has stopped its work."""
    current = table.get(record.name)
    if (
        current is None
        or current.released
        or (current.holder, current.token) != (record.holder, record.token)
    ):
        return None
    return replace(current, holder="")


def repair_in(table: Table, name: str, hold: float, token_floor: int, now: float) -> LockRecord | None:
    """The repair statement: the row rewritten as released until ``now + hold``, its token kept
    (a model record's token is always valid) unless ``token_floor`` is higher; None if absent."""
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


@dataclass(slots=True)
class MemoryStore:
    """A table of records guarded by a lock, with a clock standing in for the backend's."""

    clock: Callable[[], float] = time.time
    records: dict[str, LockRecord] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)
    releases: int = 0


class MemoryBackend:
    """An in-process backend over a :class:`MemoryStore`; every thread shares the same store."""

    def __init__(self, store: MemoryStore | None = None, *, label: str = "memory://") -> None:
        self._store = store if store is not None else MemoryStore()
        self._label = label

    def __repr__(self) -> str:
        return f"MemoryBackend({self._label!r})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            "a memory:// backend lives inside one process and cannot be sent to another; "
            "use sqlite:///path/to/file.db to share a lock between processes on one machine"
        )

    @property
    def url(self) -> str:
        """The URL this backend was made from."""
        return self._label

    @property
    def notifies(self) -> bool:
        """Releases wake waiters at once."""
        return True

    @property
    def store(self) -> MemoryStore:
        """The shared table, for tests that need to corrupt or inspect it."""
        return self._store

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """Read the record and the store's clock together."""
        with self._store.lock:
            return IOSuccess(Observation(self._store.records.get(name), self._store.clock()))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Compare-and-set claim under the store's lock."""
        with self._store.lock:
            outcome = claim_in(self._store.records, claim, self._store.clock())
            if isinstance(outcome, Success):
                self._store.records[claim.name] = outcome.unwrap()
            return IOResult.from_result(outcome)

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend our live lease."""
        with self._store.lock:
            outcome = renew_in(self._store.records, record, ttl, self._store.clock())
            if isinstance(outcome, Success):
                self._store.records[record.name] = outcome.unwrap()
            return IOResult.from_result(outcome)

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Release our lease and wake anyone waiting for it."""
        with self._store.lock:
            released = release_in(self._store.records, record, self._store.clock())
            if released is None:
                return IOSuccess(False)
            self._store.records[record.name] = released
            self._store.releases += 1
            self._store.lock.notify_all()
            return IOSuccess(True)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Take the lease from its holder, keeping token and expiry."""
        with self._store.lock:
            revoked = revoke_in(self._store.records, record)
            if revoked is None:
                return IOSuccess(False)
            self._store.records[record.name] = revoked
            return IOSuccess(True)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the record as released until ``hold`` from now (see ``LockBackend.repair``)."""
        with self._store.lock:
            repaired = repair_in(self._store.records, name, hold, token_floor, self._store.clock())
            if repaired is None:
                return IOSuccess(None)
            self._store.records[name] = repaired
            return IOSuccess(repaired.token)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """Block until any release in this store, or ``timeout``."""
        with self._store.lock:
            seen = self._store.releases
            woke = self._store.lock.wait_for(lambda: self._store.releases != seen, timeout=timeout)
            return IOSuccess(bool(woke))

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every name with a record."""
        with self._store.lock:
            return IOSuccess(sorted(self._store.records))

    def close(self) -> None:
        """Nothing to close."""
