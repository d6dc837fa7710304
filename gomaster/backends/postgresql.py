"""PostgreSQL: the lock record is a row of a table, judged by the server's clock, with release
notices over LISTEN/NOTIFY. docs/backends/postgresql.md is the operator's side.

Each step is ONE autocommit statement (:mod:`gomaster.backends._sql`'s ``POSTGRESQL`` dialect),
sent as ``SET LOCAL statement_timeout = <ms left>; <statement>`` in one simple-protocol message
(values bound client-side by ``ClientCursor``), so the server too gives up by the call's
deadline. ``SET LOCAL`` ends with the statement: nothing stays behind in a pooled session.

On the client every wait ends by the deadline: connecting polls libpq's non-blocking connect
(psycopg's own ``connect_timeout`` has whole-second resolution and a two-second floor), and
``_Connection.wait`` caps every read and write, the one use of a psycopg internal. Only host name
resolution is unbounded (libpq resolves synchronously).

``wait_for_release(s)`` LISTENs on a session of its own (:mod:`gomaster.backends._notices`), never on
the steps' connection, so a waiting listener never delays a renewal (channels: ``channel_for``).
Needs psycopg 3.2 or later (``notifies(timeout=...)`` and the capped ``wait``).
"""

from __future__ import annotations

import hashlib
import math
import re
import select
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar
from urllib.parse import quote, unquote

import psycopg
from psycopg import ClientCursor, pq
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from returns.io import IOResult
from returns.result import Failure, Result

from gomaster.backends import _durability as durability
from gomaster.backends import _settings as read
from gomaster.backends._durability import UnconfirmedError
from gomaster.backends._notices import Notices
from gomaster.backends._primary import RESURVEY, only_writable
from gomaster.backends._session import Fault, seconds_left, session_for
from gomaster.backends._settings import SettingError, checked, credentials, merge, or_raise, refuse, shown
from gomaster.backends._sql import POSTGRESQL, Row, ServerBackend, SetupError, Statement, Statements
from gomaster.backends.url import BackendURL, host_list, host_port
from gomaster.core.errors import BackendError

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
#: The share of a step's time left that the server's statement_timeout allows.
_SERVER_SHARE = 0.9
#: How often psycopg's wait loop wakes to let KeyboardInterrupt through.
_WAIT_INTERVAL = 0.1
_MS = 1000
_MAX_NAME_BYTES = 63
_SCHEMES = ("postgresql", "postgres")
#: Whether a server accepts writes: neither a standby nor read-only by default.
_WRITABLE = "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')"
#: What a failover of this server can lose depends on these (``pg_stat_replication`` lists
#: the standbys streaming from it to any user, with their details only to privileged ones).
_REPLICATION = (
    "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names'), "
    "(SELECT count(*) FROM pg_stat_replication)"
)
#: SQLSTATEs the backend explains in words.
_QUERY_CANCELED = "57014"
_INSUFFICIENT_PRIVILEGE = "42501"
_UNDEFINED_TABLE = "42P01"
#: What a CREATE TABLE may meet and leave the verdict to the column check: no right to create,
#: or another process creating the same table at the same moment.
_CREATE_REFUSALS = ("42501", "23505", "42P07", "42710")

#: ``Connection.wait(..., timeout=)`` and ``notifies(timeout=, stop_after=)`` arrived in 3.2.
MIN_PSYCOPG = (3, 2)

_RV = TypeVar("_RV")


def schema(table: str) -> str:
    """The lock table's DDL (``table`` must already be a checked identifier)."""
    return Statements(POSTGRESQL, table).schema


def channel_for(table: str, name: str) -> str:
    """The NOTIFY channel for lock ``name`` in ``table``: a lower-case identifier of 57 bytes for
    any name, and one table's releases never wake the followers of another's."""
    digest = hashlib.sha256(f"{table}\x00{name}".encode("utf-8", "surrogatepass")).hexdigest()
    return CHANNEL_PREFIX + digest[:CHANNEL_HEX]


# -- configuration -------------------------------------------------------------------------

#: libpq parameters whose values are a closed set, checked here so a typo fails at start-up.
_CHOICES: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
}
#: gomaster's own query parameters.
OWN_OPTIONS = ("table", "connect_timeout", "statement_timeout")
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
    def servers(self) -> tuple[tuple[str, str], ...]:
        """Each listed host with its port (libpq repeats a lone port for every host)."""
        hosts, ports = self.host.split(","), self.port.split(",")
        ports += [ports[-1]] * (len(hosts) - len(ports))
        return tuple(zip(hosts, ports, strict=False))

    @property
    def where(self) -> str:
        """``host:port`` for messages (each host of a list; IPv6 hosts in brackets)."""
        return ",".join(host_port(host, port) for host, port in self.servers)

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see: password and password-like options as ``***``."""
        tail = shown([*read.changed(self, OWN_OPTIONS), *self.options], _secret)
        netloc = self.where if "/" not in self.host else f"{quote(self.host, safe='')}:{self.port}"
        return f"{self.scheme}://{credentials(self.user, self.password)}{netloc}/{quote(self.database)}{tail}"

    def secrets(self) -> tuple[str, ...]:
        """The password and every password-like option's value."""
        return read.secrets_of(self.password, *(value for key, value in self.options if _secret(key)))

    def conninfo(self, server: tuple[str, str] | None = None) -> str:
        """The libpq connection string (with the password: never shown to anyone); to ``server``
        alone when given, whatever it is (the caller asks it whether it accepts writes)."""
        options = {"application_name": APPLICATION_NAME, **_KEEPALIVES, **dict(self.options)}
        host, port = server or (self.host, self.port)
        if server is not None:
            options["target_session_attrs"] = "any"
        server_options = dict(host=host, port=port, dbname=self.database, client_encoding="UTF8")
        # make_conninfo leaves out the parameters that are None.
        return make_conninfo("", **options, **server_options, user=self.user, password=self.password)


def _split_hosts(netloc_hosts: str) -> tuple[str, str]:
    """``h1:5432,h2:5433`` (a URL's host list) as libpq's ``host`` and ``port`` lists."""
    pairs = host_list(netloc_hosts)
    return ",".join(host for host, _ in pairs), ",".join(port or str(DEFAULT_PORT) for _, port in pairs)


def _parse_dsn(dsn: str | None) -> BackendURL:
    """A ``postgresql://`` URL, or a libpq ``key=value`` connection string, as a BackendURL."""
    if dsn is None:
        return BackendURL(scheme="postgresql")
    if "://" in dsn:
        return read.dsn_url(dsn, _SCHEMES, "postgresql://")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise SettingError(
            f"dsn is neither a postgresql:// URL nor a libpq connection string: {exc}"
        ) from None
    return BackendURL(
        scheme="postgresql",
        query=tuple((key, str(value)) for key, value in params.items() if value is not None),
    )


def _libpq(key: str, value: object) -> tuple[str, str]:
    """A libpq parameter, checked by libpq's own list of names and by the closed sets above."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    text = read.text(key, str(value) if number else value)
    try:
        make_conninfo("", **{key: text})
    except psycopg.ProgrammingError:
        raise SettingError(
            f"unknown PostgreSQL option {key!r}: use gomaster's {', '.join(OWN_OPTIONS)} "
            "or a libpq connection parameter (sslmode, sslrootcert, options, ...)"
        ) from None
    if key in _CHOICES:
        read.choice(key, text, _CHOICES[key])
    return key, text


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """Merge a URL with keyword overrides into checked settings, or raise ``SettingError``."""
    found = tuple(int(part) for part in re.findall(r"\d+", psycopg.__version__)[:2])
    if found < MIN_PSYCOPG:
        wanted = ".".join(map(str, MIN_PSYCOPG))
        raise SettingError(f"the postgresql backend needs psycopg >= {wanted}, found {psycopg.__version__}")
    host, port = url.host, None if url.port is None else str(url.port)
    if host and "," in host:
        host, port = _split_hosts(host)
    parts = dict(host=host or None, port=port, user=url.username, password=url.password)
    parts["database"] = unquote(url.path.removeprefix("/")) or None
    merged, options = merge(url, given, parts, {"dbname": "database"})
    database = read.text("database", merged["database"] or DEFAULT_DATABASE)
    if "\x00" in database or len(database.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
        raise SettingError(f"database name {database!r} is not allowed: at most 63 bytes, no NUL")
    table = read.identifier("table", options.pop("table", None) or DEFAULT_TABLE)
    ports = str(merged["port"] or DEFAULT_PORT)
    for each in ports.split(","):
        read.port(each)
    statement = options.pop("statement_timeout", None)
    connect = read.seconds("connect_timeout", options.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    refuse(options, _MANAGED)
    user, password = merged["user"], merged["password"]
    return _Settings(
        scheme=url.scheme if url.scheme in _SCHEMES else "postgresql",
        host=read.text("host", merged["host"] or DEFAULT_HOST),
        port=ports,
        user=None if user is None else read.text("user", user),
        password=None if password is None else read.text("password", password),
        database=database,
        table=table,
        connect_timeout=connect,
        statement_timeout=None if statement is None else read.seconds("statement_timeout", statement),
        options=tuple(_libpq(key, value) for key, value in options.items()),
    )


# -- the connection --------------------------------------------------------------------------


class _Connection(psycopg.Connection[TupleRow]):
    """A psycopg connection whose every wait on the socket ends by one deadline: psycopg waits in
    ``wait``, and the ``_WaitTimeout`` that the cap makes it raise is an ``OperationalError`` like
    any lost connection. This override is the backend's only use of psycopg's internals."""

    deadline: float = math.inf
    #: When the hosts of a list are to be asked again which accepts writes (monotonic).
    resurvey_at: float = math.inf
    #: The server's WARNINGs during the statement in progress (see ``_rows``).
    warnings: list[str]

    def heard(self, notice: psycopg.errors.Diagnostic) -> None:
        """Keep a WARNING the server sent (psycopg's notice handler): a commit whose wait for a
        synchronous standby was cancelled says so only this way, in the server's language."""
        if notice.severity_nonlocalized == "WARNING":
            self.warnings.append(" ".join(filter(None, (notice.message_primary, notice.message_detail))))

    def wait(self, gen: PQGen[_RV], interval: float = _WAIT_INTERVAL, timeout: float | None = None) -> _RV:
        """psycopg's wait, never past ``deadline``."""
        return super().wait(gen, interval, seconds_left(self.deadline, timeout))

    def closed_by_server(self) -> bool:
        """True when an idle step connection has something to read: only a server's goodbye
        (an error before it closes, or EOF) can be there, since it never LISTENs."""
        poller = select.poll()
        poller.register(self.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def statement_timeout_ms(self, cap: float | None) -> int:
        """Milliseconds the server may spend on the next statement: ``_SERVER_SHARE`` of what is
        left of the deadline, at most ``cap``, at least 1 (0 would mean no limit) and at most a
        day. The rest is for the server's answer to arrive before the client gives up: a
        cancelled wait for a synchronous standby is told only in that answer."""
        left = seconds_left(self.deadline) * _SERVER_SHARE
        return max(1, math.floor((left if cap is None else min(left, cap)) * _MS))


class _ConnectError(OSError):
    """libpq could not connect; the message is libpq's (it never contains the password)."""

    @classmethod
    def of(cls, pgconn: pq.abc.PGconn) -> _ConnectError:
        """libpq's message, each line once: with ``sslmode=prefer`` it retries and repeats itself."""
        lines = pgconn.error_message.decode("utf-8", "replace").splitlines()
        return cls(" ".join(dict.fromkeys(line.strip() for line in lines if line.strip())))


class _ConnectTimeoutError(TimeoutError):
    """``connect_timeout``, and not the call's own deadline, ran out while connecting."""


def _connect(conninfo: str, deadline: float, capped: bool) -> _Connection:
    """Connect without blocking past ``deadline``: libpq's asynchronous connect, polled here."""
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        while (status := pgconn.connect_poll()) != pq.PollingStatus.OK:
            if status == pq.PollingStatus.FAILED:  # also when connect_start already failed
                raise _ConnectError.of(pgconn)
            events = select.POLLIN if status == pq.PollingStatus.READING else select.POLLOUT
            poller = select.poll()
            poller.register(pgconn.socket, events | select.POLLERR | select.POLLHUP)
            if time.monotonic() >= deadline or not poller.poll(math.ceil(seconds_left(deadline) * _MS)):
                raise _ConnectTimeoutError() if capped else TimeoutError("connecting did not finish in time")
        pgconn.nonblocking = 1
        conn = _Connection(pgconn)
        conn.autocommit = True
        conn.warnings = []
        conn.add_notice_handler(conn.heard)
        return conn
    except BaseException:
        pgconn.finish()
        raise


def _rows(conn: _Connection, statement: Statement, cap: float | None) -> list[Row]:
    """Run ``statement`` as one autocommit statement in one round trip, with the server's
    ``statement_timeout`` set to what is left of the call, and return its rows. A WARNING with
    them fails the call (``UnconfirmedError``): the one a cancelled wait for a synchronous standby
    sends comes with a commit that the standby may lack, and no other is expected here."""
    prefix = f"SET LOCAL statement_timeout = {conn.statement_timeout_ms(cap)}; "
    conn.warnings.clear()
    with ClientCursor(conn) as cursor:
        cursor.execute(prefix + statement.sql, statement.params)
        cursor.nextset()
        rows: list[Row] = (
            list(cursor.fetchall()) if cursor.pgresult is not None and cursor.pgresult.ntuples else []
        )
    if conn.warnings:
        raise UnconfirmedError(f"the server warned: {'; '.join(conn.warnings)}")
    return rows


def _create_refused(exc: Exception) -> bool:
    return isinstance(exc, psycopg.Error) and exc.sqlstate in _CREATE_REFUSALS


class _Driver:
    """psycopg connections for the steps (each new one prepares ``tables``) or the listener."""

    errors: tuple[type[BaseException], ...] = (psycopg.Error, OSError, UnicodeError, SetupError)

    def __init__(self, settings: _Settings, tables: Statements | None) -> None:
        self.settings = settings
        self.tables = tables
        #: What a failover can lose, said once per process and when it changes.
        self.report = durability.Report()

    def open(self, deadline: float) -> _Connection:
        """A connection to the server, or of a list of hosts to the one that accepts writes
        (every host is asked: :func:`only_writable`); for the steps, with the table ready and
        what a failover can lose reported."""
        settings = self.settings
        cap = time.monotonic() + settings.connect_timeout
        if len(settings.servers) > 1:
            conn = only_writable(
                settings.servers,
                min(deadline, cap),
                partial(self._ask, capped=cap < deadline),
                _Connection.close,
                promote="promote a standby (pg_promote()) or list the primary",
                demote="stop each that is not the primary, or make it a standby of the primary",
            )
        else:
            conn = _connect(settings.conninfo(), min(deadline, cap), cap < deadline)
        conn.deadline = deadline
        if self.tables is not None:
            if len(settings.servers) > 1:
                conn.resurvey_at = time.monotonic() + RESURVEY  # a listener keeps its connection
            try:
                self.tables.prepare(partial(_rows, conn, cap=settings.statement_timeout), _create_refused)
                self.report.see(self._durability(conn))
            except BaseException:
                conn.close()
                raise
        return conn

    def _ask(self, server: tuple[str, str], until: float, *, capped: bool) -> tuple[_Connection | None, str]:
        """Whether ``server`` accepts writes (neither in recovery nor read-only): a connection to
        it when it does, and what it said, for messages."""
        where = host_port(*server)
        try:
            conn = _connect(self.settings.conninfo(server), until, capped)
        except self.errors as exc:
            return None, f"{where} {self.classify(exc).cause or 'did not answer in time'}"
        conn.deadline = until
        try:
            found = _rows(conn, Statement(_WRITABLE), self.settings.statement_timeout)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, self.errors):
                return None, f"{where} {self.classify(exc).cause or type(exc).__name__}"
            raise
        match found:
            case [(False, "off")]:
                return conn, f"{where} writable"
            case [(True, _)]:
                word = "a standby (in recovery)"
            case _:
                word = "read-only (default_transaction_read_only)"
        conn.close()
        return None, f"{where} {word}"

    def _durability(self, conn: _Connection) -> durability.Durability:
        """What a failover of the server ``conn`` reached can lose, by its settings."""
        [(commit, names, standbys)] = _rows(conn, Statement(_REPLICATION), self.settings.statement_timeout)
        where = f"PostgreSQL at {host_port(conn.info.host, str(conn.info.port))}"
        return durability.postgresql(
            where, str(commit), str(names), int(str(standbys)), len(self.settings.servers)
        )

    def usable(self, conn: _Connection) -> bool:
        """False when the connection is closed, or chosen from a list of hosts and due for
        another survey (an old primary may be back beside the new one)."""
        if conn.closed or time.monotonic() >= conn.resurvey_at:
            return False
        return self.tables is None or not conn.closed_by_server()

    def arm(self, conn: _Connection, deadline: float) -> None:
        conn.deadline = deadline

    def close(self, conn: _Connection) -> None:
        conn.close()

    def classify(self, exc: BaseException) -> Fault:
        settings = self.settings
        cause = str(exc) or type(exc).__name__
        sqlstate = exc.sqlstate if isinstance(exc, psycopg.Error) else None
        if isinstance(exc, SetupError):
            return Fault("setup", cause)
        if isinstance(exc, _ConnectTimeoutError):
            return Fault("connect_timeout", detail=f"{settings.connect_timeout:g}")
        if isinstance(exc, TimeoutError) or sqlstate == _QUERY_CANCELED:
            return Fault("timeout", cause)
        if isinstance(exc, _ConnectError):
            return _connect_fault(settings, cause)
        if sqlstate == _INSUFFICIENT_PRIVILEGE:
            table, database = settings.table, settings.database
            rights = f'the user needs SELECT, INSERT and UPDATE on "{table}" in database {database!r}'
            return Fault("denied", cause, rights)
        if sqlstate == _UNDEFINED_TABLE:
            return Fault("no_table", cause, f'lock table "{settings.table}"')
        if isinstance(exc, UnicodeError):
            return Fault("encoding", cause)
        if isinstance(exc, psycopg.OperationalError):
            return Fault("lost", cause)
        label = f"{type(exc).__name__} {sqlstate}" if sqlstate else type(exc).__name__
        return Fault("other", f"{label}: {cause}")


def _connect_fault(settings: _Settings, cause: str) -> Fault:
    """A connection failure by what libpq's own text (kept as the cause) says."""
    lowered = cause.lower()
    if "could not translate host name" in lowered:
        return Fault("unresolved", cause, repr(settings.host))
    if "password" in lowered or "authentication failed" in lowered or "role" in lowered:
        return Fault("login", cause)
    database = settings.database
    if f'database "{database}" does not exist' in cause:
        hint = f'create it (CREATE DATABASE "{database}") or name another in the URL'
        return Fault("no_database", f"{hint}; {cause}", f"database {database!r}")
    return Fault("unreachable", cause)


class _Listen:
    """LISTEN on the listener connection, and its notices."""

    def subscribe(self, conn: _Connection, channels: Collection[str]) -> None:
        """Every LISTEN in one simple-protocol message (channel names are hex identifiers)."""
        conn.execute("; ".join(f'LISTEN "{channel}"' for channel in channels))

    def receive(self, conn: _Connection, timeout: float) -> Iterable[str]:
        waited = conn.notifies(timeout=None if timeout == math.inf else timeout, stop_after=1)
        return [notice.channel for notice in waited]


# -- the backend ---------------------------------------------------------------------------


class PostgreSQLBackend(ServerBackend[_Settings]):
    """Lock records in a PostgreSQL table; picklable configuration that connects lazily.

    The keywords are the URL's parts and options (libpq's too), over a base ``dsn`` (a URL or a
    libpq ``key=value`` string). Bad settings raise ``ValueError`` here. Per process: one
    connection for the steps and one for ``wait_for_release``, each under its own lock.
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
        given: dict[str, object] = dict(user=user, password=password, host=host, port=port)
        given |= dict(database=database, table=table, connect_timeout=connect_timeout)
        given |= dict(statement_timeout=statement_timeout, **driver_options)
        self._setup(or_raise(checked(lambda: _settings(_parse_dsn(dsn), given))))

    def _start(self) -> None:
        settings = self._settings
        self._sql = Statements(POSTGRESQL, settings.table)
        self._session = session_for(_Driver(settings, self._sql), settings)
        self._notices = Notices(session_for(_Driver(settings, None), settings), _Listen())

    def channel(self, name: str) -> str:
        """The NOTIFY channel on which a release of ``name`` is announced."""
        return channel_for(self._settings.table, name)

    _channel = channel

    def _execute(self, conn: _Connection, statement: Statement) -> list[Row]:
        return _rows(conn, statement, self._settings.statement_timeout)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """:meth:`wait_for_releases` of ``name`` alone: True when its notice came."""
        return self.wait_for_releases((name,), timeout).map(bool)

    def wait_for_releases(
        self, names: Collection[str], timeout: float
    ) -> IOResult[frozenset[str], BackendError]:
        """Block up to ``timeout`` on the listener connection for a release notice on any of
        ``names``: the names that had one (perhaps while nobody waited: notices are kept until
        asked for), empty when the time ran out or another thread waited on the listener all
        that time. New names are LISTENed to in one message."""
        return IOResult.from_result(self._notices.wait_for(names, timeout, self.channel))

    def close(self) -> None:
        """Close this process's connections; a call in progress (a listener waiting out its
        timeout) closes its own when it returns. The object reconnects if used again."""
        super().close()
        self._notices.session.close()


def from_url(url: BackendURL) -> Result[PostgreSQLBackend, str]:
    """``postgresql://user:pass@host:5432/db?table=gomaster_lock`` (or ``postgres://``), checked
    now, libpq's parameters too; nothing connects yet. A ``Failure`` never shows the password."""
    if url.scheme not in _SCHEMES:
        return Failure(f"not a PostgreSQL URL: {url.redacted}")
    return checked(lambda: PostgreSQLBackend._of(_settings(url, {})), url.redacted)
