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
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends import sqlite_files
from gomaster.backends.base import check_identifier
from gomaster.backends.url import BackendURL
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

DEFAULT_TABLE = "gomaster_lock"
#: Epoch seconds from SQLite's clock; julianday('now') is fixed for the whole statement.
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
COLUMNS = "holder, version, token, acquired_at, renewed_at, expires_at, host, pid"
#: Column -> the type affinity it needs. SQLite derives affinity from the declared type, and
#: stores a value of another kind as it comes (a token as text, a time as an integer) whenever
#: the affinity does not convert it, which the lock statements would then compare wrongly.
REQUIRED_COLUMNS: dict[str, str] = {
    "name": "TEXT",
    "holder": "TEXT",
    "version": "TEXT",
    "token": "INTEGER",
    "acquired_at": "REAL",
    "renewed_at": "REAL",
    "expires_at": "REAL",
    "host": "TEXT",
    "pid": "INTEGER",
}
#: gomaster's own query parameters; SQLite has no driver options to pass on.
OWN_OPTIONS = ("table",)
_MS = 1000
_BUSY_STEP_MS = 100
_SETUP_PAUSE = 0.005
_SETUP_PAUSE_MAX = 0.1
_Refusal = TypeVar("_Refusal", Conflict, Lost)
_MEMORY = ":memory:"
_log = logging.getLogger("gomaster")


def _schema(table: str) -> str:
    return f"""
        CREATE TABLE IF NOT EXISTS {table} (
            name        TEXT PRIMARY KEY,
            holder      TEXT NOT NULL,
            version     TEXT NOT NULL,
            token       INTEGER NOT NULL,
            acquired_at REAL NOT NULL,
            renewed_at  REAL NOT NULL,
            expires_at  REAL NOT NULL,
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL
        )"""


def _fields(row: tuple[object, ...]) -> dict[str, object]:
    return dict(zip(COLUMNS.split(", "), row, strict=True))


def affinity(declared: str) -> str:
    """The type affinity SQLite gives a column declared as ``declared`` (its rules, in order)."""
    kind = declared.upper()
    if "INT" in kind:
        return "INTEGER"
    if any(word in kind for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in kind or not kind:
        return "BLOB"
    if any(word in kind for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _schema_problem(found: Mapping[str, str], unique_name: bool, table: str) -> str | None:
    """Why an existing table cannot hold lock records, or None when its columns fit."""
    ddl = " ".join(_schema(table).split())
    missing = [column for column in REQUIRED_COLUMNS if column not in found]
    if missing:
        return (
            f'table "{table}" is not a gomaster lock table: it lacks the columns '
            f"{', '.join(missing)}; use another ?table= or create it as: {ddl}"
        )
    wrong = [
        f"{column} is {found[column] or 'untyped'}, expected {kind}"
        for column, kind in REQUIRED_COLUMNS.items()
        if affinity(found[column]) != kind
    ]
    if wrong:
        return f'table "{table}" has columns of the wrong type: {"; ".join(wrong)}'
    if not unique_name:
        return f'table "{table}" needs a primary key (or unique index) on name alone; create it as: {ddl}'
    return None


class _SetupError(Exception):
    """The file or its lock table cannot be used as configured; the message says what to fix."""


class SQLiteBackend:
    """Lock records in a table of a SQLite file; picklable, connects lazily per process.

    ``private`` applies the default file's rules (owner-only files, no links, no foreign
    owners; see :mod:`gomaster.backends.sqlite_files`) each time a process connects, not only
    when the URL was parsed. ``supersedes`` names the file an older gomaster used in this one's
    place: no claim is made here while that file holds a live lease on the same name.
    """

    def __init__(
        self, path: str, *, table: str = DEFAULT_TABLE, private: bool = False, supersedes: str | None = None
    ) -> None:
        self._path = path
        self._table = check_identifier("table", table).value_or("")
        if not self._table:
            raise ValueError(check_identifier("table", table).failure())
        if private and not sqlite_files.has_default_shape(Path(path)):
            raise ValueError(f"private=True is for the default file, not {path}; see private_default()")
        self._private = private
        self._supersedes = supersedes
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._busy_ms = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, object]:
        return {
            "path": self._path,
            "table": self._table,
            "private": self._private,
            "supersedes": self._supersedes,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        supersedes = state.get("supersedes")
        self.__init__(  # type: ignore[misc]
            str(state["path"]),
            table=str(state["table"]),
            private=state.get("private") is True,
            supersedes=None if supersedes is None else str(supersedes),
        )

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.url!r})"

    @property
    def url(self) -> str:
        """``sqlite:///path`` (there is never a password)."""
        suffix = "" if self._table == DEFAULT_TABLE else f"?table={self._table}"
        return f"sqlite:///{self._path}{suffix}"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def private(self) -> bool:
        """True for the default file, which only its owner may touch."""
        return self._private

    @property
    def notifies(self) -> bool:
        """SQLite cannot notify: followers poll."""
        return False

    # -- connection ---------------------------------------------------------------------

    def _connection(self, timeout: float) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn, self._pid = self._open(timeout), os.getpid()
            self._busy_ms = 0
        wanted = max(1, int(timeout * _MS))
        # Rounded down to 100 ms steps so a renewal's shrinking timeout rarely needs the PRAGMA.
        busy_ms = wanted if wanted < _BUSY_STEP_MS else wanted - wanted % _BUSY_STEP_MS
        if busy_ms != self._busy_ms:  # a statement of its own: only when the caller's timeout changes
            self._conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            self._busy_ms = busy_ms
        return self._conn

    def _open(self, timeout: float) -> sqlite3.Connection:
        """Check the files, connect and prepare the table, then check its columns.

        The files are checked (and the database created with its mode) first in every process,
        since a file can change between parsing the URL and connecting. Switching a new file to
        WAL can answer "locked" without waiting on the busy handler when many processes start at
        once, so setup is retried.
        """
        path = Path(self._path)
        prepared = sqlite_files.prepare_private(path) if self._private else sqlite_files.prepare_shared(path)
        if isinstance(prepared, Failure):
            raise _SetupError(prepared.failure())
        deadline = time.monotonic() + timeout
        pause = _SETUP_PAUSE
        while True:
            conn = sqlite3.connect(self._path, timeout=timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_schema(self._table))
                problem = self._table_problem(conn)
            except sqlite3.OperationalError:
                conn.close()
                if time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, _SETUP_PAUSE_MAX)
                continue
            if problem is not None:
                conn.close()
                raise _SetupError(problem)
            return conn

    def _table_problem(self, conn: sqlite3.Connection) -> str | None:
        """Why the lock table, as it exists now, cannot hold lock records (see ``REQUIRED_COLUMNS``)."""
        table = self._table
        found = {
            str(c): str(t) for c, t in conn.execute("SELECT name, type FROM pragma_table_info(?)", (table,))
        }
        unique_name = False
        indexes = conn.execute(
            'SELECT name FROM pragma_index_list(?) WHERE "unique" AND NOT partial', (table,)
        )
        for (index,) in indexes.fetchall():
            covered = [str(c) for (c,) in conn.execute("SELECT name FROM pragma_index_info(?)", (index,))]
            unique_name = unique_name or covered == ["name"]
        return _schema_problem(found, unique_name, table)

    def _run(
        self, sql: str, params: tuple[object, ...], timeout: float
    ) -> Result[list[tuple[object, ...]], BackendError]:
        with self._lock:
            try:
                return Success(self._connection(timeout).execute(sql, params).fetchall())
            except _SetupError as exc:
                self._drop()
                return Failure(BackendError(self.url, str(exc)))
            except sqlite3.Error as exc:
                self._drop()
                return Failure(BackendError(self.url, f"{type(exc).__name__}: {exc}"))

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    def _record(self, name: str, row: tuple[object, ...]) -> Result[LockRecord, MalformedRecord]:
        return parse_record(name, _fields(row))

    # -- the steps ----------------------------------------------------------------------

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One SELECT returning the row (if any) and SQLite's clock."""
        sql = (
            f"SELECT n.now, t.name, {', '.join('t.' + c for c in COLUMNS.split(', '))} "
            f"FROM (SELECT {NOW} AS now) AS n LEFT JOIN {self._table} AS t ON t.name = ?"
        )
        rows = self._run(sql, (name,), timeout)
        if isinstance(rows, Failure):
            return IOFailure(rows.failure())
        now, found, *fields = rows.unwrap()[0]
        if not isinstance(now, float):
            return IOFailure(BackendError(self.url, f"SQLite clock returned {now!r}"))
        if found is None:
            return IOSuccess(Observation(None, now))
        return IOResult.from_result(self._record(name, tuple(fields)).map(lambda r: Observation(r, now)))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """INSERT when absent, else UPDATE only the exact expected row once it is free by SQLite's clock.

        Refused while the superseded file holds a live lease on the name (see ``supersedes``).
        """
        if self._supersedes is not None:
            deadline = time.monotonic() + timeout
            blocked = _superseded_lease(Path(self._supersedes), claim.name, timeout)
            if blocked is not None:
                return IOFailure(BackendError(self.url, blocked))
            timeout = max(deadline - time.monotonic(), 0.001)
        me = claim.node
        if claim.expected is None:
            sql = (
                f"INSERT INTO {self._table} (name, {COLUMNS}) "
                f"VALUES (?, ?, ?, ?, {NOW}, {NOW}, {NOW} + ?, ?, ?) "
                f"ON CONFLICT(name) DO NOTHING RETURNING {COLUMNS}"
            )
            params: tuple[object, ...] = (
                claim.name,
                me.node_id,
                me.version,
                claim.token,
                claim.ttl,
                me.host,
                me.pid,
            )
        else:
            sql = (
                f"UPDATE {self._table} SET holder = ?, version = ?, token = ?, acquired_at = {NOW}, "
                f"renewed_at = {NOW}, expires_at = {NOW} + ?, host = ?, pid = ? "
                f"WHERE name = ? AND token = ? AND holder = ? AND expires_at <= {NOW} "
                f"RETURNING {COLUMNS}"
            )
            params = (
                me.node_id,
                me.version,
                claim.token,
                claim.ttl,
                me.host,
                me.pid,
                claim.name,
                claim.expected.token,
                claim.expected.holder,
            )
        return self._one(claim.name, sql, params, timeout, missing=Conflict(claim.name))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own, still-live lease."""
        sql = (
            f"UPDATE {self._table} SET renewed_at = {NOW}, expires_at = {NOW} + ? "
            f"WHERE name = ? AND holder = ? AND token = ? AND expires_at > {NOW} RETURNING {COLUMNS}"
        )
        params = (ttl, record.name, record.holder, record.token)
        return self._one(record.name, sql, params, timeout, missing=Lost(record))

    def _one(
        self, name: str, sql: str, params: tuple[object, ...], timeout: float, *, missing: _Refusal
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        rows = self._run(sql, params, timeout)
        if isinstance(rows, Failure):
            return IOFailure(rows.failure())
        found = rows.unwrap()
        if not found:
            return IOFailure(missing)
        parsed = self._record(name, found[0])
        if isinstance(parsed, Failure):
            return IOFailure(BackendError(self.url, str(parsed.failure())))
        return IOSuccess(parsed.unwrap())

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly this holder's; the token stays."""
        sql = (
            f"UPDATE {self._table} SET holder = '', expires_at = MIN(expires_at, {NOW}) "
            "WHERE name = ? AND holder = ? AND token = ? AND holder <> '' RETURNING token"
        )
        rows = self._run(sql, (record.name, record.holder, record.token), timeout)
        return IOResult.from_result(rows).map(bool)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Clear the holder, keeping token and expiry (see ``LockBackend.revoke``)."""
        sql = (
            f"UPDATE {self._table} SET holder = '' "
            "WHERE name = ? AND holder = ? AND token = ? AND holder <> '' RETURNING token"
        )
        rows = self._run(sql, (record.name, record.holder, record.token), timeout)
        return IOResult.from_result(rows).map(bool)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the row as released until ``hold`` from now (see ``LockBackend.repair``).

        SQLite's columns take any type, so a valid token is an INTEGER in range, nothing else.
        """
        sql = (
            f"UPDATE {self._table} SET token = MAX(?, CASE WHEN typeof(token) = 'integer' "
            f"AND token >= 0 AND token < {MAX_TOKEN} THEN token ELSE CAST({NOW} * 1000 AS INTEGER) END), "
            f"holder = '', version = '', host = '', pid = 0, acquired_at = {NOW}, "
            f"renewed_at = {NOW}, expires_at = {NOW} + ? WHERE name = ? RETURNING token"
        )
        rows = self._run(sql, (token_floor, hold, name), timeout)
        return IOResult.from_result(rows).map(lambda found: int(str(found[0][0])) if found else None)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """SQLite has no notifications: report that none came."""
        return IOSuccess(False)

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the table."""
        rows = self._run(f"SELECT name FROM {self._table} ORDER BY name", (), timeout)
        return IOResult.from_result(rows).map(lambda found: [str(r[0]) for r in found])

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._pid == os.getpid():
                self._drop()


def _superseded_lease(old: Path, name: str, timeout: float) -> str | None:
    """Why a claim on ``name`` must wait for the superseded default file ``old``, or None.

    Only this user's own file counts (see ``sqlite_files.trusted_legacy_file``). Without a
    ``-wal`` file no older node is connected and the database file is complete, so it is read
    as immutable, which creates nothing in the shared temp directory; with one, it is read
    through SQLite's locks like any reader.
    """
    if not sqlite_files.trusted_legacy_file(old):
        return None
    mode = "mode=ro" if os.path.lexists(f"{old}-wal") else "immutable=1"
    live = (
        f"SELECT holder, host, pid, expires_at - {NOW} FROM {DEFAULT_TABLE} "
        f"WHERE name = ? AND holder <> '' AND expires_at > {NOW}"
    )
    try:
        uri = f"file:{quote(str(old))}?{mode}"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            tables = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (DEFAULT_TABLE,)
            ).fetchall()
            rows = conn.execute(live, (name,)).fetchall() if tables else []
        finally:
            conn.close()
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
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, with optional ``?table=``.

    Refuses what cannot elect: an in-memory database (one per process, so one master per
    process), an unknown option (a typo such as ``?tabel=`` would silently change nothing),
    and a symbolic link at the file (see :mod:`gomaster.backends.sqlite_files`). Warns when
    other local users can interfere with the file.
    """
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
    table = url.option("table", DEFAULT_TABLE) or DEFAULT_TABLE
    named = check_identifier("table", table)
    if isinstance(named, Failure):
        return Failure(named.failure())
    problem = sqlite_files.shared_problem(Path(path)) or writable_problem(Path(path))
    if problem is not None:
        return Failure(problem)
    for warning in sqlite_files.shared_warnings(Path(path)):
        _log.warning("%s", warning)
    return Success(SQLiteBackend(path, table=table))


def private_default() -> Result[SQLiteBackend, str]:
    """The default backend: this user's private file, created and checked now.

    See :mod:`gomaster.backends.sqlite_files` for where it lives and why. A ``Failure`` says
    which file or directory is unsafe, who owns it, and what to do.
    """
    old = sqlite_files.legacy_default_path()
    return (
        sqlite_files.default_path()
        .bind(sqlite_files.prepare_private)
        .map(
            lambda path: SQLiteBackend(str(path), private=True, supersedes=None if old is None else str(old))
        )
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
