"""``memory://``: the store model of :mod:`gomaster.core.model` as an in-process backend.

:class:`MemoryBackend` applies the model's statements under a lock, with a clock standing in
for the backend's, for in-process use and the contract suite. A memory backend cannot be shared
between processes: use ``sqlite://`` for that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from returns.io import IOResult, IOSuccess
from returns.result import Success

from gomaster.backends.base import Observations, Renewals
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.model import (
    claim_in,
    finish_run_in,
    release_in,
    renew_in,
    repair_in,
    revoke_in,
    start_run_in,
)
from gomaster.core.record import LockRecord, MalformedRecord, Observation

_R = TypeVar("_R", LockRecord, LockRecord | None)


@dataclass(slots=True)
class MemoryStore:
    """A table of records guarded by a lock, with a clock standing in for the backend's."""

    clock: Callable[[], float] = time.time
    records: dict[str, LockRecord] = field(default_factory=dict)
    lock: threading.Condition = field(default_factory=threading.Condition)
    #: How many times each name was released: a waiter's notice is a count it has not seen.
    releases: dict[str, int] = field(default_factory=dict)

    def keep(self, record: _R) -> _R:
        """Store ``record``, if any (under ``lock``, which the caller holds), and return it."""
        if record is not None:
            self.records[record.name] = record
        return record


class MemoryBackend:
    """An in-process backend over a :class:`MemoryStore`; every thread shares the same store."""

    def __init__(self, store: MemoryStore | None = None, *, label: str = "memory://") -> None:
        self._store = store if store is not None else MemoryStore()
        self._label = label
        #: The release count of each name this object waited for, as of its last notice: like
        #: a listener's subscription, a name is followed from its first wait on.
        self._heard: dict[str, int] = {}

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

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        """Every named record and the store's clock, read together."""
        with self._store.lock:
            now, records = self._store.clock(), self._store.records
            return IOSuccess({name: Success(Observation(records.get(name), now)) for name in names})

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Compare-and-set claim under the store's lock."""
        with self._store.lock:
            outcome = claim_in(self._store.records, claim, self._store.clock())
            return IOResult.from_result(outcome.map(self._store.keep))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend our live lease."""
        with self._store.lock:
            outcome = renew_in(self._store.records, record, ttl, self._store.clock())
            return IOResult.from_result(outcome.map(self._store.keep))

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        """Each record's renewal, all at one reading of the store's clock."""
        with self._store.lock:
            now, table = self._store.clock(), self._store.records
            return IOSuccess(
                {record.name: renew_in(table, record, ttl, now).map(self._store.keep) for record in records}
            )

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Release our lease and wake anyone waiting for it."""
        with self._store.lock:
            released = self._store.keep(release_in(self._store.records, record, self._store.clock()))
            if released is not None:
                self._store.releases[record.name] = self._store.releases.get(record.name, 0) + 1
                self._store.lock.notify_all()
            return IOSuccess(released is not None)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Take the lease from its holder, keeping token and expiry."""
        with self._store.lock:
            return IOSuccess(self._store.keep(revoke_in(self._store.records, record)) is not None)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the record as released until ``hold`` from now (see ``LockBackend.repair``)."""
        with self._store.lock:
            repaired = self._store.keep(
                repair_in(self._store.records, name, hold, token_floor, self._store.clock())
            )
            return IOSuccess(None if repaired is None else repaired.token)

    def start_run(
        self, record: LockRecord, tick: float, timeout: float, schedule: str = ""
    ) -> IOResult[bool, BackendError]:
        """Record the start of ``tick``'s run if the lease and the ledger are as ``record`` saw them."""
        with self._store.lock:
            started = start_run_in(self._store.records, record, tick, self._store.clock(), schedule)
            return IOSuccess(self._store.keep(started) is not None)

    def finish_run(
        self, record: LockRecord, tick: float, ok: bool, timeout: float
    ) -> IOResult[bool, BackendError]:
        """Record the end of ``tick``'s run if this tenure started it and still holds the lease."""
        with self._store.lock:
            finished = finish_run_in(self._store.records, record, tick, ok, self._store.clock())
            return IOSuccess(self._store.keep(finished) is not None)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """:meth:`wait_for_releases` of ``name`` alone: True when it was released."""
        return self.wait_for_releases((name,), timeout).map(bool)

    def wait_for_releases(
        self, names: Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """Block until any of ``names`` is released, or ``timeout``: the names released since this
        object's last notice of each (from its first wait for a name on, as a listener would)."""
        store = self._store
        found: frozenset[str] = frozenset()

        def news() -> bool:
            nonlocal found
            found = frozenset(name for name in names if store.releases.get(name, 0) > self._heard[name])
            return bool(found)

        with store.lock:
            for name in names:
                self._heard.setdefault(name, store.releases.get(name, 0))
            store.lock.wait_for(news, timeout=timeout)
            for name in found:
                self._heard[name] = store.releases[name]
            return IOSuccess(found)

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every name with a record."""
        with self._store.lock:
            return IOSuccess(sorted(self._store.records))

    def close(self) -> None:
        """Nothing to close."""
