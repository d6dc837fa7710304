"""Why a backend step did not succeed: typed values, never exceptions crossing layers."""

from __future__ import annotations

from dataclasses import dataclass

from gomaster.core.record import LockRecord


@dataclass(frozen=True, slots=True)
class BackendError:
    """The backend could not answer: unreachable, timed out, refused, or returned garbage.

    ``backend`` is the redacted URL, so the message can be logged as it is.
    """

    backend: str
    message: str

    def __str__(self) -> str:
        return f"{self.backend}: {self.message}"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A claim lost its compare-and-set: the record changed since it was observed."""

    name: str

    def __str__(self) -> str:
        return f"lock {self.name!r} changed since it was observed; another node claimed it"


@dataclass(frozen=True, slots=True)
class Lost:
    """A renewal found the lease no longer ours: expired, released by force, or taken over."""

    record: LockRecord

    def __str__(self) -> str:
        return f"lock {self.record.name!r} token {self.record.token} is no longer held by us"
