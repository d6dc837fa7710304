"""Mastership events: what the election announces and what the supervisor sends to workers.

They are plain frozen dataclasses so they can cross a pipe as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

DemotionReason: TypeAlias = Literal["deadline", "lost", "clock-step", "resigned", "stopped"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Elected:
    """This node became master with ``token``; ``since`` is the acquisition by the backend's clock.

    ``deadline`` is the local time (the supervisor's clock) until which the lease is known valid.
    """

    name: str
    node_id: str
    token: int
    since: float
    deadline: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Renewed:
    """The lease with ``token`` was renewed; it is known valid until local ``deadline``."""

    token: int
    deadline: float
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Demoted:
    """This node is no longer master under ``token``: master work must stop now."""

    token: int
    reason: DemotionReason


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The supervisor is going away: a worker must end, and end its process group."""


Announcement: TypeAlias = Elected | Renewed | Demoted
ToWorker: TypeAlias = Elected | Demoted | Shutdown
