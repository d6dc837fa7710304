"""What an application and the supervisor process it spawned (``Master``, ``gomaster.aio``) say
to each other over their pipe. Every message names the lock it is about; the supervisor's log
records cross too, for the application's logging.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from gomaster.core.events import Demoted, Elected
from gomaster.core.timing import Timing
from gomaster.runtime.elector import Watched
from gomaster.runtime.status import Status
from gomaster.runtime.supervisor import InApp

Hook: TypeAlias = Callable[[], object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One ``Master``'s lock name, as its supervisor runs it."""

    name: str
    node_id: str
    timing: Timing
    version: str
    start_hook: Hook | None = None
    stop_hook: Hook | None = None
    #: The work runs in the application (``gomaster.aio``), which reports its stops.
    in_app: InApp | None = None


# ---- messages, application -> supervisor ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """A ``Master`` joins: run the election of ``member.name`` too."""

    member: Member


@dataclass(frozen=True, slots=True)
class Leave:
    """A ``Master`` leaves: stop the work of ``name``, release it, then say ``Left``."""

    name: str


@dataclass(frozen=True, slots=True)
class Query:
    """What is the status of ``name``? Answered by the ``Answer`` with the same ``seq``."""

    seq: int
    name: str


@dataclass(frozen=True, slots=True)
class Resign:
    """Step down from ``name``; contend again after one ttl."""

    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    """End the supervisor: every name stops its work and releases."""


@dataclass(frozen=True, slots=True)
class WorkStopped:
    """The application's work of ``name``'s tenure ``token`` has stopped (``Member.in_app``)."""

    name: str
    token: int


# ---- messages, supervisor -> application ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The supervisor runs; its first name's lease is in ``cell`` of the shared lease."""

    pid: int
    #: The first name's cell in the shared lease.
    cell: int


@dataclass(frozen=True, slots=True)
class Joined:
    """The supervisor took ``name`` on, its lease in ``cell`` of the shared lease, or says in
    ``error`` why not."""

    name: str
    error: str = ""
    cell: int = -1


@dataclass(frozen=True, slots=True)
class Left:
    """``name`` has left: its hooks are gone and its release is sent."""

    name: str


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer to the ``Query`` with ``seq``: None when the name is not run here."""

    seq: int
    status: Status | None


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """``name`` became master (``event`` is ``Elected``) or stopped being it (``Demoted``)."""

    name: str
    event: Elected | Demoted
    #: When the supervisor announced it (CLOCK_MONOTONIC, shared by the processes of a machine):
    #: how late the application heard of it.
    at: float = field(default_factory=time.monotonic)

    @property
    def is_master(self) -> bool:
        """This node is master of ``name`` now."""
        return isinstance(self.event, Elected)


@dataclass(frozen=True, slots=True)
class Failed:
    """A hook of ``name`` failed; ``text`` says how."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class Seen:
    """An observation of ``name``'s election, for its metrics and ``on_new_leader``."""

    name: str
    seen: Watched


@dataclass(frozen=True, slots=True)
class Logged:
    """A log record of the supervisor (or of a worker, which it re-emitted), for the
    application's logging."""

    logger: str
    level: int
    message: str


ToMember: TypeAlias = Joined | Left | RoleChanged | Failed | Seen


class ForwardLogs(logging.Handler):
    """Hands the supervisor's log records to the application, whose logging they belong to."""

    def __init__(self, send: Callable[[object], None]) -> None:
        super().__init__(logging.INFO)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(Logged(record.name, record.levelno, record.getMessage()))
        except Exception:
            self.handleError(record)


def relog(message: Logged) -> None:
    """Emit a forwarded record through this process's logging."""
    logging.getLogger(message.logger).log(message.level, "%s", message.message)
