"""PostgreSQL: the lock record is a row of a table, judged by the server's clock, with release
notices over LISTEN/NOTIFY.

Every step is ONE autocommit statement, sent in one round trip, so a node that freezes between
steps never holds a transaction or a row lock open:

- observe: one SELECT of ``clock_timestamp()`` LEFT JOINed to the row, so the clock comes back
  even when the row is absent;
- first claim: ``INSERT ... ON CONFLICT (name) DO NOTHING RETURNING`` (no row back: Conflict);
- takeover: ``UPDATE ... WHERE`` name, token and holder still equal the observation and the
  lease has expired by the server's clock, ``RETURNING`` the new row;
- renew: ``UPDATE ... WHERE`` holder and token are ours and the lease is still live by the
  server's clock, ``RETURNING`` the row (none: Lost);
- release: ``WITH released AS (UPDATE ... RETURNING name) SELECT pg_notify(channel, name) FROM
  released``: the holder is cleared, the expiry pulled back to now, the token kept, and the
  notice goes out when that statement commits;
- revoke (the operator's release): clears the holder, keeping token and expiry.

``clock_timestamp()`` moves on within a statement, so each statement reads it once, in a
one-row CTE or subquery, and uses that value everywhere; ``acquired_at == renewed_at`` on a
claim, exactly.

Times
-----
Times are ``timestamptz`` columns: exact to the microsecond, readable in psql, and free of any
session or server time zone. Statements send them back as ``date_part('epoch', ...)``, a
float8, so Python never converts zones, and a corrupted time (``'infinity'``, NULL) arrives
as a value ``parse_record`` refuses (a ``MalformedRecord``) rather than as a driver error.
Tokens are ``BIGINT``, names ``TEXT PRIMARY KEY`` (compared exactly: ``'a'`` and ``'a '`` are
different locks).

Timeouts, frozen servers and reconnecting
-----------------------------------------
Every call gets a deadline, bounded on both sides:

- the client: connecting drives libpq's non-blocking connect (``PGconn.connect_start`` and
  ``connect_poll``) with ``poll`` until ``min(deadline, connect_timeout)``, because psycopg's
  own ``connect_timeout`` has whole-second resolution and a two-second floor; every read and
  write of a statement waits at most until the deadline (a psycopg ``Connection`` whose
  ``wait`` is capped by it, the one place that touches a psycopg internal). So a call
  against a server that is frozen (SIGSTOP, a VM pause), where the kernel still accepts and
  acknowledges but nothing answers, returns within its timeout plus a millisecond or so.
- the server: each statement is sent as ``SET LOCAL statement_timeout = <ms left>; <the
  statement>`` in one simple-protocol message (values bound client-side by psycopg's
  ``ClientCursor``), so the server abandons it by the same deadline instead of running on
  for a client that has gone. ``SET LOCAL`` ends with the statement, which also keeps the
  setting out of other clients' sessions behind a pooling proxy.

After any error or timeout the connection is dropped (its protocol state is unknown) and the
next call reconnects. Before reusing an idle connection the backend checks that the server has
not closed it (a restart, an administrator's ``pg_terminate_backend``): that costs one ``poll``
and lets the first call after a server restart succeed. Host name resolution is the one part
no deadline bounds (libpq resolves synchronously); use an IP address, ``hostaddr=`` or a local
resolver where that matters.

Release notices
---------------
``notifies`` is True. The channel for a lock is ``gomaster_`` plus 48 hex digits of SHA-256 of
the table and the lock name: a valid identifier of 57 bytes for any name, with any characters,
so no name is refused late. ``wait_for_release`` uses a connection of its own (never the one
for steps, so a waiting listener never delays a renewal), opened lazily per process, that has
run ``LISTEN`` on the channel. Notices for other channels it listens on are kept and answer the
next wait for that name at once.

Transaction-pooling proxies such as PgBouncer (``pool_mode=transaction``) break LISTEN: the
session that listened is not the one the proxy hands out next. Point such a deployment at the
server directly (the steps themselves are proxy-safe: single statements, ``SET LOCAL``, no
server-side prepared statements), or accept that followers fall back to polling, which only
makes handover after a graceful release take up to one ``retry`` instead of milliseconds.

Tables and permissions
----------------------
The table name is a checked identifier, always double-quoted, so it is used with exactly the
case given, in the first schema of the user's ``search_path`` (``?options=-c search_path=...``
picks another). It is created at the first connect if absent, then its columns are checked, so
a table of the wrong shape is named with what is wrong before any step runs. The user needs
SELECT, INSERT and UPDATE on it, and CREATE on the schema only while the table does not exist.

Needs psycopg 3.2 or later (``notifies(timeout=...)`` and the deadline-capped ``wait``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import select
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import psycopg
from psycopg import ClientCursor, pq
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends.base import check_identifier, timeout_error
from gomaster.backends.url import REDACTED, BackendURL, parse_url
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

__all__ = ["DEFAULT_DATABASE", "DEFAULT_TABLE", "PostgreSQLBackend", "channel_for", "from_url", "schema"]

DEFAULT_TABLE = "gomaster_lock"
DEFAULT_DATABASE = "gomaster"
DEFAULT_PORT = 5432
DEFAULT_HOST = "localhost"
#: Upper bound on one connection attempt; a call's own timeout lowers it further.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Shown to the server in pg_stat_activity unless the URL names another.
APPLICATION_NAME = "gomaster"
#: Prefix of every notification channel; the rest is hex, so the name needs no quoting.
CHANNEL_PREFIX = "gomaster_"
#: Hex digits of the hash in a channel name: 192 bits, and 57 bytes in all (the limit is 63).
CHANNEL_HEX = 48
#: How long ``close()`` waits for a call in progress before leaving the close to that call.
_CLOSE_WAIT = 0.1
#: How often psycopg's wait loop wakes to let KeyboardInterrupt through.
_WAIT_INTERVAL = 0.1
_MS = 1000
_MAX_PORT = 65535
#: The per-call timeouts are capped at a year; no wait here needs more.
_MAX_SECONDS = 365 * 24 * 3600.0
_SCHEMES = ("postgresql", "postgres")
#: SQLSTATEs the backend explains in words.
_QUERY_CANCELED = "57014"
_INSUFFICIENT_PRIVILEGE = "42501"
_UNDEFINED_TABLE = "42P01"
_UNIQUE_VIOLATION = "23505"
_DUPLICATE_TABLE = "42P07"
_DUPLICATE_OBJECT = "42710"

NOW = "clock_timestamp()"
FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")
TIMES = frozenset({"acquired_at", "renewed_at", "expires_at"})
COLUMNS = ", ".join(FIELDS)
#: Column -> the data types (as ``format_type`` names them, without a length) it may have.
#: Times must be timestamptz: ``timestamp`` would convert by each session's time zone.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("text", "character varying"),
    "holder": ("text", "character varying"),
    "version": ("text", "character varying"),
    "token": ("bigint",),
    "acquired_at": ("timestamp with time zone",),
    "renewed_at": ("timestamp with time zone",),
    "expires_at": ("timestamp with time zone",),
    "host": ("text", "character varying"),
    "pid": ("bigint", "integer"),
}

#: ``Connection.wait(..., timeout=)`` and ``notifies(timeout=, stop_after=)`` arrived in 3.2.
MIN_PSYCOPG = (3, 2)


def _driver_problem() -> str | None:
    """Why the installed psycopg cannot serve this backend, or None."""
    found = tuple(int(part) for part in re.findall(r"\d+", psycopg.__version__)[:2])
    if found < MIN_PSYCOPG:
        wanted = ".".join(map(str, MIN_PSYCOPG))
        return f"the postgresql backend needs psycopg >= {wanted}, found {psycopg.__version__}"
    return None


_T = TypeVar("_T")
_RV = TypeVar("_RV")
_Refusal = TypeVar("_Refusal", Conflict, Lost)
_Row = tuple[Any, ...]


def schema(table: str) -> str:
    """The lock table's DDL (``table`` must already be a checked identifier)."""
    return f"""CREATE TABLE IF NOT EXISTS "{table}" (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    version     TEXT NOT NULL,
    token       BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL
)"""


def channel_for(table: str, name: str) -> str:
    """The NOTIFY channel for lock ``name`` in ``table``: a lower-case identifier of 57 bytes.

    Hashing makes any lock name (quotes, spaces, any script, any length) a valid channel, and
    including the table keeps two lock tables in one database from waking each other.
    """
    digest = hashlib.sha256(f"{table}\x00{name}".encode("utf-8", "surrogatepass")).hexdigest()
    return CHANNEL_PREFIX + digest[:CHANNEL_HEX]


# -- configuration -------------------------------------------------------------------------


class _SettingError(ValueError):
    """A configuration value that cannot work; its message says what to write instead."""


def _text_option(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _SettingError(f"option {key} must be text, not {type(value).__name__}")
    return value


def _seconds_option(key: str, value: object) -> float:
    try:
        seconds = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else -1
    except ValueError:
        seconds = -1
    if not 0 < seconds <= _MAX_SECONDS:
        raise _SettingError(f"option {key}={value!r} must be a positive number of seconds, at most a year")
    return seconds


def _port_option(value: object) -> int:
    try:
        port = int(value) if isinstance(value, str | int) and not isinstance(value, bool) else -1
    except ValueError:
        port = -1
    if not 0 < port <= _MAX_PORT:
        raise _SettingError(f"port {value!r} is not a TCP port number")
    return port


#: libpq parameters whose values are a closed set, checked here so a typo fails at start-up.
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
}
#: gomaster's own query parameters.
OWN_OPTIONS = ("table", "connect_timeout", "statement_timeout")
#: Parameters that name the parts of the URL; given as query parameters they override them.
_PART_OPTIONS = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
#: libpq parameters this backend sets itself.
_MANAGED = {
    "client_encoding": "lock names and holders travel as UTF-8",
    "replication": "the lock table needs an ordinary session",
}
#: TCP keepalives, so a listener idle on a vanished host notices within about half a minute.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


def _secret(key: str) -> bool:
    return "password" in key.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Everything a backend needs to connect: plain, picklable, and never printed with its password."""

    scheme: str = "postgresql"
    host: str = DEFAULT_HOST
    port: str = str(DEFAULT_PORT)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = DEFAULT_DATABASE
    table: str = DEFAULT_TABLE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    statement_timeout: float | None = None
    options: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def where(self) -> str:
        """``host:port`` for messages (each host of a list; IPv6 hosts in brackets)."""
        hosts, ports = self.host.split(","), self.port.split(",")
        ports += [ports[-1]] * (len(hosts) - len(ports))
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in zip(hosts, ports, strict=False))

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see: password and password-like options as ``***``."""
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="") + (f":{REDACTED}" if self.password else "") + "@"
        query: list[tuple[str, object]] = []
        if self.table != DEFAULT_TABLE:
            query.append(("table", self.table))
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
            query.append(("connect_timeout", self.connect_timeout))
        if self.statement_timeout is not None:
            query.append(("statement_timeout", self.statement_timeout))
        query += [(k, REDACTED if _secret(k) else v) for k, v in self.options]
        tail = "&".join(f"{k}={quote(str(v), safe='/:')}" for k, v in query)
        netloc = self.where if "/" not in self.host else f"{quote(self.host, safe='')}:{self.port}"
        return f"{self.scheme}://{auth}{netloc}/{quote(self.database)}" + (f"?{tail}" if tail else "")

    def conninfo(self) -> str:
        """The libpq connection string (with the password: never shown to anyone)."""
        params: dict[str, str] = {
            "application_name": APPLICATION_NAME,
            **_KEEPALIVES,
            **dict(self.options),
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "client_encoding": "UTF8",
        }
        if self.user is not None:
            params["user"] = self.user
        if self.password is not None:
            params["password"] = self.password
        return make_conninfo("", **params)


def _split_hosts(netloc_hosts: str) -> tuple[str, str]:
    """``h1:5432,h2:5433`` (a URL's host list) as libpq's ``host`` and ``port`` lists."""
    hosts, ports = [], []
    for part in netloc_hosts.split(","):
        host, colon, port = part.rpartition(":") if not part.endswith("]") else (part, "", "")
        if not colon:
            host, port = part, ""
        hosts.append(host.strip("[]"))
        ports.append(port or str(DEFAULT_PORT))
    return ",".join(hosts), ",".join(ports)


def _parse_dsn(dsn: str) -> BackendURL:
    """A ``postgresql://`` URL, or a libpq ``key=value`` connection string, as a BackendURL."""
    if "://" in dsn:
        parsed = parse_url(dsn)
        if isinstance(parsed, Failure):
            raise _SettingError(parsed.failure())
        url = parsed.unwrap()
        if url.scheme not in _SCHEMES:
            raise _SettingError(f"dsn must be a postgresql:// URL, not {url.scheme}://")
        return url
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise _SettingError(
            f"dsn is neither a postgresql:// URL nor a libpq connection string: {exc}"
        ) from None
    return BackendURL(
        scheme="postgresql",
        query=tuple((key, str(value)) for key, value in params.items() if value is not None),
    )


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """Merge a URL with keyword overrides into checked settings, or raise ``_SettingError``."""
    host, port = url.host, None if url.port is None else str(url.port)
    if host and "," in host:
        host, port = _split_hosts(host)
    parts: dict[str, object] = {
        "host": host or None,
        "port": port,
        "user": url.username,
        "password": url.password,
        "database": unquote(url.path.removeprefix("/")) or None,
    }
    options: dict[str, object] = {}
    for key, value in (*url.query, *given.items()):
        if value is None:
            continue
        target = _PART_OPTIONS.get(key, key if key in parts else None)
        if target is not None:
            parts[target] = value
        else:
            options[key] = value
    database = _text_option("database", parts["database"] or DEFAULT_DATABASE)
    if "\x00" in database or len(database.encode("utf-8", "surrogatepass")) > 63:
        raise _SettingError(f"database name {database!r} is not allowed: at most 63 bytes, no NUL")
    table = _text_option("table", options.pop("table", DEFAULT_TABLE) or DEFAULT_TABLE)
    checked = check_identifier("table", table)
    if isinstance(checked, Failure):
        raise _SettingError(checked.failure())
    port_text = str(parts["port"] or DEFAULT_PORT)
    for each in port_text.split(","):
        _port_option(each)
    statement = options.pop("statement_timeout", None)
    settings = _Settings(
        scheme=url.scheme if url.scheme in _SCHEMES else "postgresql",
        host=_text_option("host", parts["host"] or DEFAULT_HOST),
        port=port_text,
        user=None if parts["user"] is None else _text_option("user", parts["user"]),
        password=None if parts["password"] is None else _text_option("password", parts["password"]),
        database=database,
        table=table,
        connect_timeout=_seconds_option(
            "connect_timeout", options.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        ),
        statement_timeout=None if statement is None else _seconds_option("statement_timeout", statement),
    )
    driver: list[tuple[str, str]] = []
    for key, value in options.items():
        if key in _MANAGED:
            raise _SettingError(f"option {key} cannot be set: {_MANAGED[key]}")
        text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        text = _text_option(key, text)
        try:
            make_conninfo("", **{key: text})
        except psycopg.ProgrammingError:
            raise _SettingError(
                f"unknown PostgreSQL option {key!r}: use gomaster's {', '.join(OWN_OPTIONS)} "
                "or a libpq connection parameter (sslmode, sslrootcert, options, ...)"
            ) from None
        choices = _CHOICES.get(key)
        if choices is not None and text not in choices:
            raise _SettingError(f"option {key}={text!r} is not one of {', '.join(choices)}")
        driver.append((key, text))
    return replace(settings, options=tuple(driver))


# -- the connection --------------------------------------------------------------------------


class _Connection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose every wait on the socket ends by one deadline.

    psycopg runs each operation as a generator and waits on the socket in ``wait``; capping
    that wait at what is left before ``deadline`` turns it into a bound on the whole call,
    and the ``_WaitTimeout`` it raises is an ``OperationalError`` like any lost connection.
    This override is the backend's only use of psycopg's internals.
    """

    deadline: float = math.inf

    def wait(self, gen: PQGen[_RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None) -> _RV:
        """psycopg's wait, never past ``deadline``."""
        left = self.deadline - time.monotonic()
        if left < math.inf:
            left = max(left, 0.0)
            timeout = left if timeout is None else min(timeout, left)
        return super().wait(gen, interval, timeout)

    def closed_by_server(self) -> bool:
        """True when an idle step connection has something to read: only a server's goodbye
        (an error before it closes, or EOF) can be there, since it never LISTENs."""
        poller = select.poll()
        poller.register(self.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def statement_timeout_ms(self, cap: float | None) -> int:
        """Milliseconds the server may spend on the next statement: what is left of the deadline
        (at least 1, since 0 would mean no limit), or 0 when there is neither deadline nor cap."""
        left = min(self.deadline - time.monotonic(), math.inf if cap is None else cap)
        if left == math.inf:
            return 0
        return max(1, math.floor(left * _MS))


class _ConnectError(Exception):
    """libpq could not connect; the message is libpq's (it never contains the password)."""

    @classmethod
    def of(cls, pgconn: pq.abc.PGconn) -> _ConnectError:
        """libpq's message, each line once: with ``sslmode=prefer`` it retries and repeats itself."""
        lines = pgconn.error_message.decode("utf-8", "replace").splitlines()
        return cls(" ".join(dict.fromkeys(line.strip() for line in lines if line.strip())))


class _ConnectTimeoutError(TimeoutError):
    """Connecting did not finish in the time allowed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"connecting did not finish within {seconds:.3f} s")
        self.seconds = seconds


class _SetupError(Exception):
    """The server answered, but the lock table cannot be used as configured."""


def _connect(conninfo: str, deadline: float, budget: float) -> _Connection:
    """Connect without blocking past ``deadline``: libpq's asynchronous connect, polled here."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        while True:
            if pgconn.status == pq.ConnStatus.BAD:
                raise _ConnectError.of(pgconn)
            status = pgconn.connect_poll()
            if status == pq.PollingStatus.OK:
                break
            if status == pq.PollingStatus.FAILED:
                raise _ConnectError.of(pgconn)
            events = select.POLLIN if status == pq.PollingStatus.READING else select.POLLOUT
            poller = select.poll()
            poller.register(pgconn.socket, events | select.POLLERR | select.POLLHUP)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(None if left == math.inf else math.ceil(left * _MS)):
                raise _ConnectTimeoutError(budget)
        pgconn.nonblocking = 1
        conn = _Connection(pgconn)
        conn.autocommit = True
        return conn
    except BaseException:
        pgconn.finish()
        raise


def _rows(conn: _Connection, sql: str, params: Sequence[object], cap: float | None) -> list[_Row]:
    """Run ``sql`` as one autocommit statement in one round trip, with the server's
    ``statement_timeout`` set to what is left of the call, and return its rows."""
    prefix = f"SET LOCAL statement_timeout = {conn.statement_timeout_ms(cap)}; "
    with ClientCursor(conn) as cursor:
        cursor.execute(prefix + sql, params)
        cursor.nextset()
        return cursor.fetchall() if cursor.pgresult is not None and cursor.pgresult.ntuples else []


def _lock_wait(timeout: float) -> float:
    """A timeout ``Lock.acquire`` accepts (it refuses infinity)."""
    return min(max(timeout, 0.0), _MAX_SECONDS)


def _record(name: str, row: Sequence[object]) -> Result[LockRecord, MalformedRecord]:
    return parse_record(name, dict(zip(FIELDS, row, strict=True)))


def _returned(alias: str = "") -> str:
    """The record's columns as statements return them: times as float8 epoch seconds."""
    return ", ".join(f"date_part('epoch', {alias}{c})" if c in TIMES else f"{alias}{c}" for c in FIELDS)


def _schema_problem(found: Mapping[str, str], unique_name: bool, table: str) -> str | None:
    """Why an existing table cannot hold lock records, or None when its columns fit."""
    ddl = " ".join(schema(table).split())
    missing = [column for column in REQUIRED_COLUMNS if column not in found]
    if missing:
        return (
            f'table "{table}" is not a gomaster lock table: it lacks the columns '
            f"{', '.join(missing)}; use another ?table= or create it as: {ddl}"
        )
    wrong = [
        f"{column} is {found[column]}, expected {' or '.join(kinds)}"
        for column, kinds in REQUIRED_COLUMNS.items()
        if re.sub(r"\(.*\)", "", found[column]) not in kinds
    ]
    if wrong:
        return f'table "{table}" has columns of the wrong type: {"; ".join(wrong)}'
    if not unique_name:
        return f'table "{table}" needs a primary key (or unique index) on name alone; create it as: {ddl}'
    return None


_TABLE_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       EXISTS (SELECT 1 FROM pg_index i
               WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indnatts = 1
                 AND i.indkey[0] = a.attnum AND i.indpred IS NULL AND i.indexprs IS NULL)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
"""


@dataclass(eq=False)
class _Session:
    """One connection of this process with the lock that serialises its use.

    ``channels`` and ``pending`` belong to the listener session: what it has LISTENed to,
    and notices that arrived while it waited for another name.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: _Connection | None = None
    pid: int = field(default_factory=os.getpid)
    close_requested: bool = False
    channels: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)

    def __del__(self, _getpid: Callable[[], int] = os.getpid) -> None:
        """A backend dropped without ``close()`` still ends its sessions (not a parent's after fork).

        ``os.getpid`` is bound at definition: at interpreter exit module globals may be gone.
        """
        conn = self.conn
        if conn is not None and self.pid == _getpid():
            conn.close()

    def drop(self) -> None:
        """Close without ceremony: after an error the protocol state is unknown."""
        conn, self.conn = self.conn, None
        self.channels.clear()
        self.pending.clear()
        if conn is not None and self.pid == os.getpid():
            conn.close()


#: Connections inherited over fork(): kept referenced and unused, so no finaliser in the child
#: touches (or warns about) a session that belongs to the parent.
_INHERITED: list[_Connection] = []
_LIVE: weakref.WeakSet[PostgreSQLBackend] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for backend in list(_LIVE):
        backend._after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


# -- the backend ---------------------------------------------------------------------------


class PostgreSQLBackend:
    """Lock records in a PostgreSQL table; picklable configuration that connects lazily.

    Build it from a URL with :func:`from_url` (``connect("postgresql://...")``) or with
    keywords: ``user``, ``password``, ``host``, ``port``, ``database``, ``table``, a base ``dsn``
    (a URL or a libpq ``key=value`` string) instead of the parts, ``connect_timeout`` and
    ``statement_timeout`` (seconds; caps under each call's own timeout), and libpq parameters
    such as ``sslmode``. Bad settings raise ``ValueError`` here, so a typo fails at start-up,
    not at the first election. Per process: one connection for the steps and one for
    ``wait_for_release``, each used under its own lock by one thread at a time.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | str | None = None,
        database: str | None = None,
        table: str | None = None,
        connect_timeout: float | None = None,
        statement_timeout: float | None = None,
        **driver_options: object,
    ) -> None:
        given = {
            "user": user,
            "password": password,
            "host": host,
            "port": port,
            "database": database,
            "table": table,
            "connect_timeout": connect_timeout,
            "statement_timeout": statement_timeout,
            **driver_options,
        }
        try:
            base = _parse_dsn(dsn) if dsn is not None else BackendURL(scheme="postgresql")
            settings = _settings(base, given)
        except _SettingError as exc:
            raise ValueError(str(exc)) from None
        problem = _driver_problem()
        if problem is not None:
            raise ValueError(problem)
        self._setup(settings)

    @classmethod
    def _of(cls, settings: _Settings) -> PostgreSQLBackend:
        backend = cls.__new__(cls)
        backend._setup(settings)
        return backend

    def _setup(self, settings: _Settings) -> None:
        self._settings = settings
        self._url = settings.redacted_url
        self._steps = _Session()
        self._listener = _Session()
        _LIVE.add(self)

    def __getstate__(self) -> _Settings:
        return self._settings

    def __setstate__(self, state: _Settings) -> None:
        self._setup(state)

    def __repr__(self) -> str:
        return f"PostgreSQLBackend({self.url!r})"

    @property
    def url(self) -> str:
        """The configuration as a URL, with the password (and password-like options) as ``***``."""
        return self._url

    @property
    def table(self) -> str:
        """The lock table's name."""
        return self._settings.table

    @property
    def database(self) -> str:
        """The database that holds the lock table."""
        return self._settings.database

    @property
    def notifies(self) -> bool:
        """PostgreSQL wakes waiting followers with NOTIFY when a lease is released."""
        return True

    def channel(self, name: str) -> str:
        """The NOTIFY channel on which a release of ``name`` is announced."""
        return channel_for(self._settings.table, name)

    # -- connections ------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child, where only the forking thread survives: a lock another thread held
        in the parent would stay locked forever, so the child starts with fresh sessions."""
        for session in (self._steps, self._listener):
            if session.conn is not None:
                _INHERITED.append(session.conn)
        self._steps = _Session()
        self._listener = _Session()

    def _session(self, *, listener: bool) -> _Session:
        """This process's session for steps or for the listener (fresh ones after a fork)."""
        session = self._listener if listener else self._steps
        if session.pid != os.getpid():
            self._after_fork()
            session = self._listener if listener else self._steps
        return session

    def _run(self, step: str, timeout: float, work: Callable[[_Connection], _T]) -> Result[_T, BackendError]:
        """Do ``work`` on this process's step connection within ``timeout``, waiting at most
        that long for another thread's call to finish first."""
        deadline = time.monotonic() + timeout
        session = self._session(listener=False)
        if not session.lock.acquire(timeout=_lock_wait(timeout)):
            return Failure(timeout_error(self.url, f"{step} (waiting for another thread's call)", timeout))
        try:
            return self._locked(session, step, timeout, deadline, work)
        finally:
            session.lock.release()

    def _locked(
        self,
        session: _Session,
        step: str,
        timeout: float,
        deadline: float,
        work: Callable[[_Connection], _T],
    ) -> Result[_T, BackendError]:
        """Do ``work`` on ``session``'s connection (its lock held); the one place driver errors
        become ``BackendError``. Any failure drops the connection, so the next call reconnects."""
        try:
            conn = self._connection(session, deadline)
            return Success(work(conn))
        except (psycopg.Error, OSError, UnicodeError, _ConnectError, _SetupError) as exc:
            session.drop()
            return Failure(BackendError(self.url, self._explain(step, exc, timeout, deadline)))
        except BaseException:
            session.drop()
            raise
        finally:
            if session.close_requested:
                session.close_requested = False
                session.drop()

    def _connection(self, session: _Session, deadline: float) -> _Connection:
        conn = session.conn
        if conn is not None and (conn.closed or (session is self._steps and conn.closed_by_server())):
            session.drop()
            conn = None
        if conn is None:
            conn = self._open(deadline, prepare=session is self._steps)
            session.conn = conn
        conn.deadline = deadline
        return conn

    def _open(self, deadline: float, *, prepare: bool) -> _Connection:
        settings = self._settings
        budget = settings.connect_timeout
        conn = _connect(settings.conninfo(), min(deadline, time.monotonic() + budget), budget)
        conn.deadline = deadline
        if prepare:
            try:
                self._prepare_table(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _columns(self, conn: _Connection) -> tuple[dict[str, str], bool]:
        found = _rows(conn, _TABLE_COLUMNS, (f'"{self._settings.table}"',), self._settings.statement_timeout)
        columns = {str(column): str(kind) for column, kind, _ in found}
        unique_name = any(column == "name" and unique for column, _, unique in found)
        return columns, unique_name

    def _prepare_table(self, conn: _Connection) -> None:
        """Create the table if it is absent, then check its columns.

        The existence check comes first, so a user with only SELECT, INSERT and UPDATE never
        needs CREATE on the schema once the table exists. Two processes creating it at the
        same moment may collide in the catalog; the loser just checks the winner's table.
        """
        table = self._settings.table
        found, unique_name = self._columns(conn)
        if not found:
            try:
                _rows(conn, schema(table), (), self._settings.statement_timeout)
            except psycopg.Error as exc:
                if exc.sqlstate == _INSUFFICIENT_PRIVILEGE:
                    raise _SetupError(
                        f'lock table "{table}" does not exist in database {self.database!r} and this '
                        f"user may not create it; grant CREATE on the schema, or create it once as: "
                        f"{' '.join(schema(table).split())}"
                    ) from None
                if exc.sqlstate not in (_UNIQUE_VIOLATION, _DUPLICATE_TABLE, _DUPLICATE_OBJECT):
                    raise
            found, unique_name = self._columns(conn)
        problem = _schema_problem(found, unique_name, table)
        if problem is not None:
            raise _SetupError(problem)

    def _explain(self, step: str, exc: BaseException, timeout: float, deadline: float) -> str:
        """What went wrong, naming the server and the cause, and never the password."""
        settings = self._settings
        where = settings.where
        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        cause = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, _SetupError):
            message = str(exc)
        elif isinstance(exc, _ConnectTimeoutError) and exc.seconds < timeout:
            message = f"cannot connect to {where} within connect_timeout={exc.seconds:g} s"
        elif isinstance(exc, TimeoutError) or sqlstate == _QUERY_CANCELED or time.monotonic() >= deadline:
            message = (
                f"{timeout_error(self.url, step, timeout).message} on {where}; the connection was dropped"
            )
        elif isinstance(exc, _ConnectError):
            message = self._explain_connect(cause)
        elif sqlstate == _INSUFFICIENT_PRIVILEGE:
            message = (
                f'{step} denied on {where}: the user needs SELECT, INSERT and UPDATE on "{settings.table}" '
                f"in database {settings.database!r} ({cause})"
            )
        elif sqlstate == _UNDEFINED_TABLE:
            message = f'{step} failed on {where}: lock table "{settings.table}" has gone ({cause})'
        elif isinstance(exc, UnicodeError):
            message = f"{step} failed on {where}: cannot encode a value as UTF-8 ({cause})"
        elif isinstance(exc, psycopg.OperationalError):
            message = f"lost the connection to {where} during {step}: {cause}"
        else:
            label = f"{type(exc).__name__} {sqlstate}" if sqlstate else type(exc).__name__
            message = f"{step} failed on {where}: {label}: {cause}"
        if settings.password:
            message = message.replace(settings.password, REDACTED)
        return message

    def _explain_connect(self, cause: str) -> str:
        """A connection failure in words; libpq's own text is kept as the cause."""
        settings = self._settings
        where = settings.where
        lowered = cause.lower()
        if "could not translate host name" in lowered:
            return f"cannot resolve host {settings.host!r}; check the host name ({cause})"
        if "password" in lowered or "authentication failed" in lowered or "role" in lowered:
            return (
                f"cannot log in to {where} as {settings.user!r}: check the user name and password ({cause})"
            )
        if f'database "{settings.database}" does not exist' in cause:
            return (
                f"database {settings.database!r} does not exist on {where}; create it "
                f'(CREATE DATABASE "{settings.database}") or name another in the URL ({cause})'
            )
        return f"cannot connect to {where}: {cause}"

    # -- the steps --------------------------------------------------------------------------

    def _statement(
        self, step: str, sql: str, params: Sequence[object], timeout: float
    ) -> Result[list[_Row], BackendError]:
        cap = self._settings.statement_timeout
        return self._run(step, timeout, lambda conn: _rows(conn, sql, params, cap))

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One SELECT returning the row (if any) and the server's clock at the same moment."""
        sql = (
            f"SELECT date_part('epoch', n.now), t.name IS NOT NULL, {_returned('t.')} "
            f'FROM (SELECT {NOW} AS now) AS n LEFT JOIN "{self._settings.table}" AS t ON t.name = %s'
        )
        rows = self._statement("observe", sql, (name,), timeout)
        if isinstance(rows, Failure):
            return IOFailure(rows.failure())
        now, found, *fields = rows.unwrap()[0]
        if not isinstance(now, float) or not math.isfinite(now):
            return IOFailure(BackendError(self.url, f"server clock returned {now!r}"))
        if not found:
            return IOSuccess(Observation(None, now))
        return IOResult.from_result(_record(name, fields).map(lambda record: Observation(record, now)))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """INSERT when absent, else UPDATE only the exact expected row once it has expired by server
        time (a graceful release expires it at once; an operator's revoke keeps the expiry)."""
        me = claim.node
        table = self._settings.table
        if claim.expected is None:
            sql = (
                f"WITH n AS (SELECT {NOW} AS now) "
                f'INSERT INTO "{table}" AS t (name, {COLUMNS}) '
                "SELECT %s, %s, %s, %s, n.now, n.now, n.now + make_interval(secs => %s), %s, %s FROM n "
                f"ON CONFLICT (name) DO NOTHING RETURNING {_returned('t.')}"
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
                f"WITH n AS (SELECT {NOW} AS now) "
                f'UPDATE "{table}" AS t SET holder = %s, version = %s, token = %s, acquired_at = n.now, '
                "renewed_at = n.now, expires_at = n.now + make_interval(secs => %s), host = %s, pid = %s "
                "FROM n WHERE t.name = %s AND t.token = %s AND t.holder = %s AND t.expires_at <= n.now "
                f"RETURNING {_returned('t.')}"
            )
            expected = claim.expected
            params = (me.node_id, me.version, claim.token, claim.ttl, me.host, me.pid)
            params += (claim.name, expected.token, expected.holder)
        return self._one("claim", claim.name, sql, params, timeout, missing=Conflict(claim.name))

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own, still-live lease, in one round trip."""
        sql = (
            f"WITH n AS (SELECT {NOW} AS now) "
            f'UPDATE "{self._settings.table}" AS t SET renewed_at = n.now, '
            "expires_at = n.now + make_interval(secs => %s) "
            "FROM n WHERE t.name = %s AND t.holder = %s AND t.token = %s AND t.expires_at > n.now "
            f"RETURNING {_returned('t.')}"
        )
        params = (ttl, record.name, record.holder, record.token)
        return self._one("renew", record.name, sql, params, timeout, missing=Lost(record))

    def _one(
        self,
        step: str,
        name: str,
        sql: str,
        params: tuple[object, ...],
        timeout: float,
        *,
        missing: _Refusal,
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        """The record a claim or renewal wrote, ``missing`` when its WHERE matched nothing."""
        rows = self._statement(step, sql, params, timeout)
        if isinstance(rows, Failure):
            return IOFailure(rows.failure())
        found = rows.unwrap()
        if not found:
            return IOFailure(missing)
        parsed = _record(name, found[0])
        if isinstance(parsed, Failure):
            return IOFailure(BackendError(self.url, str(parsed.failure())))
        return IOSuccess(parsed.unwrap())

    def release(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """Mark the lease released if it is still exactly this holder's, keeping the token, and
        NOTIFY the lock's channel in the same statement (delivered when it commits)."""
        sql = (
            "WITH released AS ("
            f"UPDATE \"{self._settings.table}\" SET holder = '', expires_at = LEAST(expires_at, {NOW}) "
            "WHERE name = %s AND holder = %s AND token = %s AND holder <> '' RETURNING name"
            ") SELECT pg_notify(%s, released.name) FROM released"
        )
        params = (record.name, record.holder, record.token, self.channel(record.name))
        rows = self._statement("release", sql, params, timeout)
        return IOResult.from_result(rows).map(lambda found: len(found) == 1)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping token and
        expiry, so nobody claims before the holder's own deadline has stopped its work."""
        sql = (
            f"UPDATE \"{self._settings.table}\" SET holder = '' "
            "WHERE name = %s AND holder = %s AND token = %s AND holder <> '' RETURNING token"
        )
        rows = self._statement("revoke", sql, (record.name, record.holder, record.token), timeout)
        return IOResult.from_result(rows).map(lambda found: len(found) == 1)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the row as released until ``hold`` from now (see ``LockBackend.repair``)."""
        sql = (
            f"WITH n AS (SELECT {NOW} AS now) "
            f'UPDATE "{self._settings.table}" AS t SET token = GREATEST(%s, CASE WHEN t.token >= 0 '
            f"AND t.token < {MAX_TOKEN} THEN t.token "
            "ELSE floor(date_part('epoch', n.now) * 1000)::bigint END), "
            "holder = '', version = '', host = '', pid = 0, acquired_at = n.now, renewed_at = n.now, "
            "expires_at = n.now + make_interval(secs => %s) FROM n WHERE t.name = %s RETURNING t.token"
        )
        rows = self._statement("repair", sql, (token_floor, hold, name), timeout)
        return IOResult.from_result(rows).map(lambda found: int(str(found[0][0])) if found else None)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """Block up to ``timeout`` on the listener connection for a release notice for ``name``.

        True when one came (possibly while nobody was waiting: notices are kept until asked
        for), False when the time ran out, or another thread was already waiting on the
        listener all that time. The steps' connection is never touched.
        """
        channel = self.channel(name)
        deadline = time.monotonic() + timeout
        session = self._session(listener=True)

        def listen(conn: _Connection) -> bool:
            if channel not in session.channels:
                conn.execute(f'LISTEN "{channel}"')
                session.channels.add(channel)
            while channel not in session.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for notice in conn.notifies(timeout=None if left == math.inf else left, stop_after=1):
                    session.pending.add(notice.channel)
            session.pending.discard(channel)
            return True

        if not session.lock.acquire(timeout=_lock_wait(timeout)):
            return IOSuccess(False)
        try:
            reused = session.conn is not None
            outcome = self._locked(session, "wait_for_release", timeout, deadline, listen)
            if reused and isinstance(outcome, Failure) and time.monotonic() < deadline:
                # An idle listener learns of a server restart only by waiting on it; the
                # notices it would have had are gone anyway, so listen afresh at once.
                outcome = self._locked(session, "wait_for_release", timeout, deadline, listen)
            return IOResult.from_result(outcome)
        finally:
            session.lock.release()

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the table."""
        sql = f'SELECT name FROM "{self._settings.table}" ORDER BY name'
        rows = self._statement("names", sql, (), timeout)
        return IOResult.from_result(rows).map(lambda found: [str(row[0]) for row in found])

    def close(self) -> None:
        """Close this process's connections; the object reconnects if used again.

        A call in progress (a listener waiting out its timeout) is not interrupted: it closes
        its connection itself when it returns.
        """
        for session in (self._steps, self._listener):
            if session.pid != os.getpid():
                continue
            if session.lock.acquire(timeout=_CLOSE_WAIT):
                try:
                    session.drop()
                finally:
                    session.lock.release()
            else:
                session.close_requested = True


def from_url(url: BackendURL) -> Result[PostgreSQLBackend, str]:
    """``postgresql://user:pass@host:5432/db?table=gomaster_lock`` (or ``postgres://``).

    ``table``, ``connect_timeout`` and ``statement_timeout`` (seconds) are gomaster's; other
    parameters (``sslmode``, ``sslrootcert``, ``options``, ``target_session_attrs``, ...) go to
    libpq and are checked now. ``host=/run/postgresql`` in the query selects a Unix socket.
    Nothing connects yet. The message of a ``Failure`` says what to change and never contains
    the password.
    """
    if url.scheme not in _SCHEMES:
        return Failure(f"not a PostgreSQL URL: {url.redacted}")
    problem = _driver_problem()
    if problem is not None:
        return Failure(problem)
    try:
        return Success(PostgreSQLBackend._of(_settings(url, {})))
    except _SettingError as exc:
        return Failure(f"{exc} (in {url.redacted})")
