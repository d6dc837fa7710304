"""The lock record, one read of the backend, and who a node is: plain values, no behaviour."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from returns.result import Failure, Result, Success

#: Lock names travel into table rows, channel names and keys; keep them printable and bounded.
MAX_NAME_LENGTH = 200
#: An application version is stored next to the holder (``VARCHAR(255)`` on MySQL).
MAX_VERSION_LENGTH = 255
#: C0 and C1 control characters and DEL: they move a terminal's cursor or start escape sequences.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    """What the lock record keeps of a scheduled name's runs: the tick whose run started last and
    the token of the tenure that started it, the tick whose run finished last, and how it ended.

    Ticks are backend-clock instants in whole milliseconds (:func:`tick_millis`), stored as
    integers so that every backend compares them exactly; 0 stands for "none yet". A name that
    is never scheduled keeps the empty ledger.
    """

    started: float | None = None
    token: int = 0
    finished: float | None = None
    ok: bool = True
    #: The schedule that started the last run, as :func:`gomaster.core.schedule.describe` wrote
    #: it ("" when unknown): what ``gomaster status`` computes the next tick from.
    schedule: str = ""

    @property
    def unfinished(self) -> bool:
        """The last run started and never finished: it was cut short."""
        return self.started is not None and (self.finished is None or self.finished < self.started)

    def stored(self) -> tuple[int, int, int, int]:
        """The four stored fields: started and finished ticks in milliseconds (0: none), the
        token, and ok as 0 or 1."""
        return (tick_millis(self.started), self.token, tick_millis(self.finished), int(self.ok))


def tick_millis(tick: float | None) -> int:
    """A tick as the integer milliseconds a ledger stores (0 for none). Ticks are whole
    milliseconds by construction, so ``tick_millis(millis / 1000) == millis`` exactly."""
    return 0 if tick is None else round(tick * 1000)


def tick_of(millis: int) -> float | None:
    """A stored tick back as epoch seconds (None for 0, "none yet")."""
    return None if millis == 0 else millis / 1000


#: The ledger of a name that never ran on a schedule.
EMPTY_LEDGER = Ledger()

#: The ledger's stored numbers, in the order of :meth:`Ledger.stored`.
LEDGER_FIELDS = ("run_started", "run_token", "run_finished", "run_ok")
#: The ledger's stored text: the schedule that started the last run (not compared by start_run).
SCHEDULE_FIELD = "run_schedule"
#: The longest schedule a ledger stores (``VARCHAR(255)`` on MySQL).
MAX_SCHEDULE_LENGTH = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class LockRecord:
    """The lease for one lock name as the backend stores it.

    Times are the backend's clock in epoch seconds. ``holder == ""`` means released; the token
    stays, so the next acquisition still gets ``token + 1``.
    """

    name: str
    holder: str
    version: str
    token: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    host: str
    pid: int
    #: The schedule's run ledger (see :class:`Ledger`): columns of the same record, so that the
    #: lease's compare-and-set guards it and a demoted master cannot write it.
    ledger: Ledger = EMPTY_LEDGER

    @property
    def released(self) -> bool:
        """True when nobody holds the lease (it was released, or never held)."""
        return self.holder == ""

    def live_at(self, server_now: float) -> bool:
        """True when a holder has the lease at ``server_now`` by the backend's clock."""
        return not self.released and self.expires_at > server_now

    def claimable_at(self, server_now: float) -> bool:
        """True once the lease has expired by the backend's clock.

        Expiry alone decides, not the holder: a graceful release sets ``expires_at`` to the
        backend's now, so it is claimable at once, while an operator's revoke keeps the expiry,
        so a holder that has not yet noticed is never overlapped by its successor.
        """
        return self.expires_at <= server_now


@dataclass(frozen=True, slots=True)
class Observation:
    """One read of the backend: the record (None if it never existed) and the backend's clock."""

    record: LockRecord | None
    server_now: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeIdentity:
    """Who is contending: ``node_id`` is fresh per start, so a restarted process is a new node."""

    node_id: str
    host: str
    pid: int
    version: str = ""


@dataclass(frozen=True, slots=True)
class MalformedRecord:
    """A row read back from the backend that does not form a valid :class:`LockRecord`."""

    name: str
    problem: str

    def __str__(self) -> str:
        return f"lock record {self.name!r} is malformed: {self.problem}"


def _storable(what: str, text: str) -> Result[str, str]:
    """``text``, or why it cannot be stored and shown safely.

    A lone surrogate (what Python makes of bytes that are not UTF-8 in ``argv``) has no UTF-8
    form, so every driver fails on it, each in its own way; control characters would reach a
    terminal through ``gomaster status``. Both are refused before anything is sent.
    """
    if _CONTROL.search(text):
        return Failure(f"{what} must not contain control characters, got {text!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Failure(
            f"{what} must be valid Unicode text: {text[exc.start : exc.end]!r} at position "
            f"{exc.start} is a lone surrogate (bytes that are not UTF-8?)"
        )
    return Success(text)


def check_name(name: object) -> Result[str, str]:
    """Accept a lock name that every backend can store, or say why not."""
    if not isinstance(name, str):
        return Failure(f"lock name must be a string, got {type(name).__name__}")
    if not name:
        return Failure("lock name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        return Failure(f"lock name is longer than {MAX_NAME_LENGTH} characters")
    return _storable("lock name", name)


def check_version(version: object) -> Result[str, str]:
    """Accept an application version that every backend can store and a terminal can show."""
    if not isinstance(version, str):
        return Failure(f"version must be a string, got {type(version).__name__}")
    if len(version) > MAX_VERSION_LENGTH:
        return Failure(f"version is longer than {MAX_VERSION_LENGTH} characters")
    return _storable("version", version)


def _text(fields: Mapping[str, object], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{key} is {type(value).__name__}, not text")
    return value


def _integer(fields: Mapping[str, object], key: str) -> int:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} is {value!r}, not an integer")
    # A driver's int subclass (bson's Int64) would drag its module into every process the
    # record or its token is sent to; a plain int travels light.
    return int(value)


def _seconds(fields: Mapping[str, object], key: str) -> float:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{key} is {value!r}, not a time")
    try:
        seconds = float(value)
    except OverflowError:
        raise TypeError(f"{key} is too large to be a time") from None
    if not math.isfinite(seconds):
        raise TypeError(f"{key} is not finite")
    return seconds


#: Tokens are stored in signed 64-bit columns everywhere.
MAX_TOKEN = 2**63 - 1


def parse_record(name: str, fields: Mapping[str, object]) -> Result[LockRecord, MalformedRecord]:
    """Build a record from backend fields, turning any corruption into a ``Failure``.

    Backends call this on every row they read so that a hand-edited or damaged row can never
    crash the election loop: it becomes a value the elector can report and wait out.
    """
    try:
        record = LockRecord(
            name=name,
            holder=_text(fields, "holder"),
            version=_text(fields, "version"),
            token=_integer(fields, "token"),
            acquired_at=_seconds(fields, "acquired_at"),
            renewed_at=_seconds(fields, "renewed_at"),
            expires_at=_seconds(fields, "expires_at"),
            host=_text(fields, "host"),
            pid=_integer(fields, "pid"),
            ledger=_ledger(fields),
        )
    except TypeError as exc:
        return Failure(MalformedRecord(name, str(exc)))
    if not 0 <= record.token < MAX_TOKEN:
        return Failure(MalformedRecord(name, f"token {record.token} is out of range"))
    return Success(record)


def _ledger(fields: Mapping[str, object]) -> Ledger:
    """The ledger's fields, each optional (a record written before schedules existed has none)."""
    started, token, finished, ok = (
        _integer(fields, key) if fields.get(key) is not None else default
        for key, default in zip(LEDGER_FIELDS, (0, 0, 0, 1), strict=True)
    )
    for key, value in zip(LEDGER_FIELDS[:3], (started, token, finished), strict=True):
        if not 0 <= value < MAX_TOKEN:
            raise TypeError(f"{key} {value} is out of range")
    if ok not in (0, 1):
        raise TypeError(f"run_ok is {ok}, not 0 or 1")
    schedule = _text(fields, SCHEDULE_FIELD)
    if (started, token, finished, ok, schedule) == (0, 0, 0, 1, ""):
        return EMPTY_LEDGER
    return Ledger(
        started=tick_of(started), token=token, finished=tick_of(finished), ok=bool(ok), schedule=schedule
    )
