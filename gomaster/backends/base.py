"""The contract every lock backend satisfies."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Protocol, TypeAlias, runtime_checkable

from returns.io import IOResult
from returns.result import Failure, Result

from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import LockRecord, MalformedRecord, Observation

#: What ``observe_many`` answers for each name: its own observation, or its own malformed record.
Observations: TypeAlias = dict[str, Result[Observation, MalformedRecord]]
#: What ``renew_many`` answers for each name: the record as renewed, or ``Lost``.
Renewals: TypeAlias = dict[str, Result[LockRecord, Lost]]

_log = logging.getLogger("gomaster")


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
        """True when ``wait_for_release(s)`` is woken by the backend rather than just sleeping."""
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

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        """Every named record (None if absent) and the backend's clock, read at one moment in one
        round trip; every name is in the answer, and a malformed record spoils only its own entry.
        No names: an empty answer, without a round trip."""
        ...

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        """Each record's ``renew`` (its own compare-and-set, to backend now + ttl) in one round
        trip (two on MongoDB, which has no write that answers many documents); a name whose
        lease is not ours any more is ``Lost`` alone, the others are renewed. A renewed row that
        does not read back as a record (a hand edit) is ``Lost`` too, and logged: its holder
        steps down, which is safe. Names are distinct; none: an empty answer, without a round
        trip."""
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

    def start_run(
        self, record: LockRecord, tick: float, timeout: float, schedule: str = ""
    ) -> IOResult[bool, BackendError]:
        """Record in the lock record's ledger that ``record``'s tenure starts the run of ``tick``
        of ``schedule`` (its description, kept with the start for ``gomaster status``).

        A compare-and-set, judged on the backend's clock: it writes only while the lease is
        ``record``'s (holder and token) and live, and while the ledger still equals
        ``record.ledger`` (so a tick is started once, by a tenure that saw the ledger as it is).
        True when it wrote; False when it was refused, and then the run must not start.
        """
        ...

    def finish_run(
        self, record: LockRecord, tick: float, ok: bool, timeout: float
    ) -> IOResult[bool, BackendError]:
        """Record that the run of ``tick`` this tenure started has ended, well (``ok``) or not.

        Written only while the lease is ``record``'s and live and the ledger's last start is
        ``tick`` by this token; False otherwise (a demoted master records nothing: its run
        stays unfinished, cut short, for the next master's policy to judge).
        """
        ...

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name the backend has a record for."""
        ...

    def close(self) -> None:
        """Drop this process's connection; the object stays usable and reconnects on demand."""
        ...


def lost_unless_read(
    record: LockRecord, written: Result[LockRecord, Lost | MalformedRecord | str]
) -> Result[LockRecord, Lost]:
    """One entry of a ``renew_many`` answer: the record the renewal wrote, or ``Lost`` when it
    wrote none or one that does not read back (logged, since a batch has no error of its own per
    name: the holder steps down, and observing the name shows the problem)."""
    if isinstance(written, Failure) and not isinstance(written.failure(), Lost):
        _log.warning("renewal of lock %r counted as lost: %s", record.name, written.failure())
    return written.alt(lambda _: Lost(record))
