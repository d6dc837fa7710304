"""SQLite: the embedded default, for processes on one machine sharing one file.

Each step is one autocommit statement whose clock is ``julianday('now')`` (one machine, one
clock), so a node frozen between steps never holds a transaction open. WAL lets readers run
beside the single writer, and a busy timeout bounded by the caller's timeout orders writers.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TypeVar

from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends.base import check_identifier
from gomaster.backends.url import BackendURL
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

DEFAULT_TABLE = "gomaster_lock"
#: Epoch seconds from SQLite's clock; julianday('now') is fixed for the whole statement.
NOW = "((julianday('now') - 2440587.5) * 86400.0)"
COLUMNS = "holder, version, token, acquired_at, renewed_at, expires_at, host, pid"
_MS = 1000
_BUSY_STEP_MS = 100
_SETUP_PAUSE = 0.005
_SETUP_PAUSE_MAX = 0.1
_Refusal = TypeVar("_Refusal", Conflict, Lost)


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


class SQLiteBackend:
    """Lock records in a table of a SQLite file; picklable, connects lazily per process."""

    def __init__(self, path: str, *, table: str = DEFAULT_TABLE) -> None:
        self._path = path
        self._table = check_identifier("table", table).value_or("")
        if not self._table:
            raise ValueError(check_identifier("table", table).failure())
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._busy_ms = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, str]:
        return {"path": self._path, "table": self._table}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["path"], table=state["table"])  # type: ignore[misc]

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
        """Connect and prepare the file. Switching a new file to WAL can answer "locked" without
        waiting on the busy handler when many processes start at once, so setup is retried."""
        deadline = time.monotonic() + timeout
        pause = _SETUP_PAUSE
        while True:
            conn = sqlite3.connect(self._path, timeout=timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(_schema(self._table))
                return conn
            except sqlite3.OperationalError:
                conn.close()
                if time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, _SETUP_PAUSE_MAX)

    def _run(
        self, sql: str, params: tuple[object, ...], timeout: float
    ) -> Result[list[tuple[object, ...]], BackendError]:
        with self._lock:
            try:
                return Success(self._connection(timeout).execute(sql, params).fetchall())
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
        """INSERT when absent, else UPDATE only the exact expected row once it is free by SQLite's clock."""
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


def from_url(url: BackendURL) -> Result[SQLiteBackend, str]:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db``, with optional ``?table=``."""
    path = url.path
    if url.host:
        return Failure("a sqlite URL has no host: use sqlite:///relative/path.db or sqlite:////abs/path.db")
    # SQLAlchemy's convention: sqlite:///rel/path.db is relative, sqlite:////abs/path.db absolute.
    path = path.removeprefix("/")
    if not path:
        return Failure("a sqlite URL needs a file path, for example sqlite:///var/tmp/gomaster.db")
    table = url.option("table", DEFAULT_TABLE) or DEFAULT_TABLE
    named = check_identifier("table", table)
    if isinstance(named, Failure):
        return Failure(named.failure())
    problem = writable_problem(Path(path))
    if problem is not None:
        return Failure(problem)
    return Success(SQLiteBackend(path, table=table))


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
