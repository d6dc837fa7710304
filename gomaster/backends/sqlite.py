"""SQLite: the embedded default, for processes on one machine sharing one file.

Each step is one autocommit statement whose clock is ``julianday('now')`` (one machine, one
clock), so a node frozen between steps never holds a transaction open. WAL lets readers run
beside the single writer, and a busy timeout bounded by the caller's timeout orders writers.

Who may touch the files is :mod:`gomaster.backends.sqlite_files`' business; this module checks
the table's columns when it connects, as the MySQL and PostgreSQL backends do, so a table of
the wrong shape is named with what is wrong before any step runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote

from returns.io import IOFailure, IOResult
from returns.result import Failure, Result, Success

from gomaster.backends import _settings as read
from gomaster.backends import sqlite_files
from gomaster.backends._session import Fault, seconds_left, session_for
from gomaster.backends._settings import checked, or_raise
from gomaster.backends._sql import SQLITE, Row, SetupError, SQLBackend, Statement, Statements
from gomaster.backends.url import BackendURL
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict
from gomaster.core.record import LockRecord

DEFAULT_TABLE = "gomaster_lock"
#: Epoch seconds from SQLite's clock; julianday('now') is fixed for the whole statement.
NOW = SQLITE.clock
#: gomaster's own query parameters; SQLite has no driver options to pass on.
OWN_OPTIONS = ("table",)
_MS = 1000
_BUSY_STEP_MS = 100
_SETUP_PAUSE = 0.005
_SETUP_PAUSE_MAX = 0.1
_MEMORY = ":memory:"
_log = logging.getLogger("gomaster")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """The file, its lock table, and the default file's rules (see :class:`SQLiteBackend`)."""

    path: str
    table: str = DEFAULT_TABLE
    private: bool = False
    supersedes: str | None = None

    @property
    def where(self) -> str:
        """The database file."""
        return self.path

    @property
    def redacted_url(self) -> str:
        """``sqlite:///path`` (there is never a password)."""
        suffix = "" if self.table == DEFAULT_TABLE else f"?table={self.table}"
        return f"sqlite:///{self.path}{suffix}"

    def secrets(self) -> tuple[str, ...]:
        """None: a file path is no secret."""
        return ()


class _Driver:
    """sqlite3 connections to the file, each checked (files, table) as it opens."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, UnicodeError, SetupError)

    def __init__(self, settings: _Settings, tables: Statements) -> None:
        self.settings = settings
        self.tables = tables
        self.busy_ms = 0

    def open(self, deadline: float) -> sqlite3.Connection:
        """Check the files (in every process: they may change after the URL was read), connect,
        switch to WAL and prepare the table; retried, since switching a new file to WAL can answer
        "locked" without waiting on the busy handler when many processes start at once."""
        path = Path(self.settings.path)
        prepare = sqlite_files.prepare_private if self.settings.private else sqlite_files.prepare_shared
        or_raise(prepare(path), SetupError)
        pause = _SETUP_PAUSE
        while True:
            conn = sqlite3.connect(
                path, timeout=seconds_left(deadline), isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                self.tables.prepare(partial(_rows, conn), lambda _: False)
            except sqlite3.OperationalError:
                conn.close()
                if time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, _SETUP_PAUSE_MAX)
                continue
            except BaseException:
                conn.close()
                raise
            self.busy_ms = 0
            return conn

    def usable(self, conn: sqlite3.Connection) -> bool:
        return True

    def arm(self, conn: sqlite3.Connection, deadline: float) -> None:
        """The busy timeout: what is left of the call, rounded down to 100 ms steps so that a
        renewal's shrinking timeout rarely costs the PRAGMA (a statement of its own)."""
        wanted = max(1, int(seconds_left(deadline) * _MS))
        busy_ms = wanted if wanted < _BUSY_STEP_MS else wanted - wanted % _BUSY_STEP_MS
        if busy_ms != self.busy_ms:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self.busy_ms = busy_ms

    def close(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def classify(self, exc: BaseException) -> Fault:
        if isinstance(exc, SetupError):
            return Fault("setup", str(exc))
        if isinstance(exc, UnicodeError):  # refused before anything reached the file
            return Fault("encoding", str(exc), keep=True)
        return Fault("other", f"{type(exc).__name__}: {exc}")


def _rows(conn: sqlite3.Connection, statement: Statement) -> list[Row]:
    return conn.execute(statement.sql, statement.params).fetchall()


class SQLiteBackend(SQLBackend[_Settings]):
    """Lock records in a table of a SQLite file; picklable, connects lazily per process.
    ``private`` applies the default file's rules at every connect; ``supersedes`` names the file an
    older gomaster used instead, and no claim is made while it holds a live lease on the name."""

    def __init__(
        self, path: str, *, table: str = DEFAULT_TABLE, private: bool = False, supersedes: str | None = None
    ) -> None:
        table = or_raise(checked(lambda: read.identifier("table", table)))
        if private and not sqlite_files.has_default_shape(Path(path)):
            raise ValueError(f"private=True is for the default file, not {path}; see private_default()")
        self._setup(_Settings(path=path, table=table, private=private, supersedes=supersedes))

    def _start(self) -> None:
        self._sql = Statements(SQLITE, self._settings.table)
        self._session = session_for(_Driver(self._settings, self._sql), self._settings)

    @property
    def path(self) -> str:
        """The database file."""
        return self._settings.path

    @property
    def private(self) -> bool:
        """True for the default file, which only its owner may touch."""
        return self._settings.private

    _execute = staticmethod(_rows)

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """Refused while the superseded file holds a live lease on the name (see ``supersedes``)."""
        old = self._settings.supersedes
        if old is None:
            return super().claim(claim, timeout)
        deadline = time.monotonic() + timeout
        blocked = _superseded_lease(Path(old), claim.name, timeout)
        if blocked is not None:
            return IOFailure(BackendError(self.url, blocked))
        return super().claim(claim, max(deadline - time.monotonic(), 0.001))


def _superseded_lease(old: Path, name: str, timeout: float) -> str | None:
    """Why a claim on ``name`` must wait for the superseded default file ``old`` (only this user's
    own counts), or None. Without a ``-wal`` file no older node is connected, so it is read as
    immutable, which creates nothing in the shared temp directory; else like any reader."""
    if not sqlite_files.trusted_legacy_file(old):
        return None
    mode = "mode=ro" if os.path.lexists(f"{old}-wal") else "immutable=1"
    live = (
        f"SELECT holder, host, pid, expires_at - {NOW} FROM {DEFAULT_TABLE} "
        f"WHERE name = ? AND holder <> '' AND expires_at > {NOW}"
    )
    uri = f"file:{quote(str(old))}?{mode}"
    try:
        with contextlib.closing(
            sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        ) as conn:
            tables = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (DEFAULT_TABLE,)
            ).fetchall()
            rows = conn.execute(live, (name,)).fetchall() if tables else []
    except sqlite3.Error as exc:
        return (
            f"cannot check the old default SQLite file {old} for a live lease on {name!r} "
            f"({type(exc).__name__}: {exc}); if no node of an older gomaster uses it any more, remove it"
        )
    if not rows:
        return None
    holder, host, pid, left = rows[0]
    remaining = f", {left:.1f} s left" if isinstance(left, float) else ""
    return (
        f"refusing to claim {name!r}: the old default SQLite file {old} still holds a live lease on "
        f"it ({holder} on {host}, pid {pid}{remaining}), so nodes of an older gomaster still elect "
        f"there, and a master here as well would make two during a rolling upgrade; stop those nodes "
        f"(this node claims once that lease is released or expires), or keep every node on the old "
        f"file until all are upgraded: GOMASTER_BACKEND=sqlite:///{old}"
    )


def _memory_problem(path: str, url: BackendURL) -> str | None:
    """Why ``path`` is not a plain database file: an in-memory database, or a SQLite URI."""
    if _MEMORY in path or url.option("mode") == "memory" or url.option("vfs") == "memdb":
        return (
            "an in-memory SQLite database belongs to the one process that opens it, so every "
            "process would hold its own lock and be master; use memory:// within one process "
            "(tests), or a file, sqlite:////var/lib/app/locks.db, for several"
        )
    if path.startswith("file:"):
        return "a sqlite URL takes a plain file path, not a file: URI: sqlite:///relative.db or sqlite:////abs/path.db"
    return None


def from_url(url: BackendURL) -> Result[SQLiteBackend, str]:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, with optional ``?table=``. Refuses an
    in-memory database (a master per process), an unknown option (a typo would change nothing)
    and a link at the file; warns when other local users can interfere with the file."""
    if url.host:
        return Failure("a sqlite URL has no host: use sqlite:///relative/path.db or sqlite:////abs/path.db")
    # SQLAlchemy's convention: sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute.
    path = url.path.removeprefix("/")
    memory = _memory_problem(path, url)
    if memory is not None:
        return Failure(memory)
    if not path:
        return Failure("a sqlite URL needs a file path, for example sqlite:////var/lib/app/locks.db")
    for key, _ in url.query:
        if key not in OWN_OPTIONS:
            return Failure(f"unknown SQLite option {key!r}; known options: {', '.join(OWN_OPTIONS)}")
    table = checked(lambda: read.identifier("table", url.option("table") or DEFAULT_TABLE))
    return table.bind(lambda found: _shared(path).map(lambda usable: SQLiteBackend(usable, table=found)))


def _shared(path: str) -> Result[str, str]:
    """``path`` if this process can use it as a database file (warning about what other users
    could do to it), else why not."""
    problem = sqlite_files.shared_problem(Path(path)) or writable_problem(Path(path))
    if problem is not None:
        return Failure(problem)
    for warning in sqlite_files.shared_warnings(Path(path)):
        _log.warning("%s", warning)
    return Success(path)


def private_default() -> Result[SQLiteBackend, str]:
    """The default backend: this user's private file (:mod:`gomaster.backends.sqlite_files`),
    created and checked now; a ``Failure`` names what is unsafe, its owner, and what to do."""
    old = sqlite_files.legacy_default_path()
    supersedes = None if old is None else str(old)
    return (
        sqlite_files.default_path()
        .bind(sqlite_files.prepare_private)
        .map(lambda path: SQLiteBackend(str(path), private=True, supersedes=supersedes))
    )


def writable_problem(path: Path) -> str | None:
    """Why this process could not use ``path`` as a SQLite database (and its WAL), or None."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.exists():
        if path.is_dir():
            return f"SQLite path {path} is a directory, not a file"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"SQLite file {path} is not readable and writable by this user"
    if not directory.is_dir():
        return f"directory {directory} for the SQLite file does not exist; create it first"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable; SQLite needs it for the file and its WAL"
    return None
