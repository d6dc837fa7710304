"""The contract every lock backend satisfies."""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from returns.io import IOResult

from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import LockRecord, MalformedRecord, Observation


@runtime_checkable
class LockBackend(Protocol):
    """A store for lock records that does each step as one atomic statement on its own clock.

    Every method takes a ``timeout`` in seconds and returns within it (plus a small constant),
    turning every driver exception into a ``Failure``. Objects are picklable configuration: they
    connect lazily, in the process that uses them, and never share a connection across processes.
    """

    @property
    def url(self) -> str:
        """The backend's URL with any password replaced by ``***``."""
        ...

    @property
    def notifies(self) -> bool:
        """True when ``wait_for_release`` is woken by the backend rather than just sleeping."""
        ...

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """Read the record (None if absent) and the backend's clock in one statement."""
        ...

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Take the lease if the row still equals ``claim.expected`` and is free by backend time."""
        ...

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend our unexpired lease to backend now + ttl; ``Lost`` if it is not ours any more."""
        ...

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly ``record``'s holder and token.

        The token stays. True when this call released it; False when it was no longer that
        holder's, which leaves the row untouched.
        """
        ...

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping the token
        AND the expiry. The holder's next renewal fails so it demotes, and nobody can claim before
        the lease expires, by which time the holder's deadline has stopped its work."""
        ...

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """The operator's fix for a corrupted record, in one statement that never reads it first.

        Rewrites ``name``'s record, whatever it holds, as released and claimable ``hold`` seconds
        from backend now (pass at least the nodes' ttl, so a holder that may still run has demoted
        itself first). The token becomes the stored one when that is a valid token, else the
        backend clock in epoch milliseconds (above any token counted up from 1), and at least
        ``token_floor``: it never goes down. Returns the token written, or None when ``name`` has
        no record.
        """
        ...

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """Block up to ``timeout`` for a release notice; True if one came. Polling backends sleep."""
        ...

    def wait_for_releases(
        self, names: Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """Block up to ``timeout`` for a release notice on any of ``names``; the ones that had one.

        One listener follows every name of a process, so this returns as soon as any of them is
        released, with every one released by then; an empty set when time ran out. A notice that
        came while nobody waited is kept for the next wait that includes its name, once a wait
        has included it (that subscribes it; names may change between calls). A backend that
        cannot notify answers an empty set at once, and the elector polls.
        """
        ...

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name the backend has a record for."""
        ...

    def close(self) -> None:
        """Drop this process's connection; the object stays usable and reconnects on demand."""
        ...

