"""MySQL and MariaDB: the lock record is a row of a table, judged by the server's clock.

The statements are :mod:`gomaster.backends._sql`'s (its ``MYSQL`` dialect); this module owns the
PyMySQL connection, the settings and the error classifier (docs/backends/mysql.md: the operator's).

Each step is ONE round trip of autocommit statements. MySQL has no ``UPDATE ... RETURNING``, so
a write goes as a multi-statement query, the write and a SELECT of the row it wrote (safe with
``CLIENT.MULTI_STATEMENTS``: the table name is a checked identifier, every value bound). That is
sound: a write that matched one row (``FOUND_ROWS`` counts matches) left our holder and fresh
token, which no other node changes before the lease expires; if an operator cleared the holder
in between, the SELECT finds nothing and the step reports ``Conflict``/``Lost``, the truth by
then. A first claim's duplicate key is the losing answer (never ``ON DUPLICATE KEY UPDATE``,
whose row count is ambiguous).

The subtle part is the late reply. ``_Connection`` re-arms the socket timeout before every packet
to what is left of the call's deadline. A deadline that passes before a reply's first byte leaves
the stream whole, owing exactly that reply: the connection is kept, and the next call reads and
discards it (``ready``, ``settle``) before sending its own, so a frozen or overloaded server costs
no reconnects. A reply not begun ``late_reply_wait`` after its statement is given up with its
connection; any other error, or a timeout inside a reply, drops the connection.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import quote

import pymysql
from pymysql.charset import charset_by_name
from pymysql.constants import CLIENT, COMMAND, CR, ER
from pymysql.protocol import MysqlPacket
from returns.result import Failure, Result

from gomaster.backends import _durability as durability
from gomaster.backends import _settings as read
from gomaster.backends._primary import RESURVEY, only_writable
from gomaster.backends._session import Fault, Session, seconds_left, session_for
from gomaster.backends._settings import SettingError, checked, credentials, merge, or_raise, refuse, shown
from gomaster.backends._sql import MYSQL, Row, ServerBackend, SetupError, Statement, Statements
from gomaster.backends.url import BackendURL, host_list, host_port

__all__ = ["DEFAULT_DATABASE", "DEFAULT_TABLE", "MySQLBackend", "from_url"]

DEFAULT_TABLE = "gomaster_lock"
DEFAULT_DATABASE = "gomaster"
DEFAULT_PORT = 3306
DEFAULT_HOST = "localhost"
#: Upper bound on one connection attempt; a call's own timeout lowers it further.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Pause between attempts of the first connect when ``connect_retries`` asks for retries.
DEFAULT_CONNECT_WAIT = 1.0
#: How long after sending a statement its reply may still come on a kept connection.
DEFAULT_LATE_REPLY_WAIT = 5.0
#: More retries than anyone waits for; the call's deadline ends them sooner anyway.
_MOST_RETRIES = 1_000_000
#: Strict mode turns truncation of holder/version/host into an error instead of a silent change.
SQL_MODE = "TRADITIONAL"
#: How long closing lets the polite goodbye (COM_QUIT) take.
_CLOSE_TIMEOUT = 0.5
#: ER_ACCESS_DENIED_NO_PASSWORD_ERROR, which PyMySQL does not name.
_ACCESS_DENIED_NO_PASSWORD = 1698
_CLIENT_FLAGS = CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
_SCHEMES = ("mysql", "mariadb")
#: OpenSSL's verification results for a certificate that does not name what was connected to.
_NAME_MISMATCHES = frozenset({62, 63, 64})  # X509_V_ERR_HOSTNAME/EMAIL/IP_ADDRESS_MISMATCH


# -- configuration -------------------------------------------------------------------------


def _charset(key: str, value: object) -> str:
    name = read.text(key, value)
    try:
        charset_by_name(name)
    except KeyError:
        raise SettingError(f"option {key}={name!r} is not a character set PyMySQL knows") from None
    return name


#: Query parameters passed on to PyMySQL, with how to read each from a URL.
DRIVER_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "charset": _charset,
    **dict.fromkeys(("unix_socket", "bind_address", "program_name", "server_public_key"), read.text),
}
#: TLS options (see ``_tls``); the backend builds the TLS context from them itself.
TLS_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "ssl": read.flag,
    **dict.fromkeys(("ssl_ca", "ssl_cert", "ssl_key"), read.existing_file),
    "ssl_key_password": read.text,
    **dict.fromkeys(("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled"), read.flag),
}
#: TLS options that ask for TLS whatever their value. ``ssl_key_password`` does not: it only
#: unlocks ``ssl_key``, and ``ssl``/``ssl_disabled`` ask for it or refuse it by their value.
_ASKS_FOR_TLS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity")
_TLS_FILES = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_key_password")
#: gomaster's own query parameters.
OWN_OPTIONS = ("table", "create_db", "connect_timeout", "connect_retries", "connect_wait", "late_reply_wait")
#: Driver options this backend sets per call itself.
_MANAGED = {
    "read_timeout": "every call's own timeout bounds reads",
    "write_timeout": "every call's own timeout bounds writes",
    "autocommit": "every step is one autocommit statement",
    "client_flag": "the backend needs exactly FOUND_ROWS and MULTI_STATEMENTS",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class _TLS:
    """TLS that the settings ask for: required, with both checks on unless an option turned one
    off. PyMySQL checks neither when given only ``ssl_ca`` (and before 1.2 goes on in plain text
    without TLS), so the backend builds the context, once, and refuses such a server itself."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify_cert: bool = True
    verify_identity: bool = True

    def context(self) -> ssl.SSLContext:
        """A client context that checks what this asks for (this loads files: call it once)."""
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key, self.key_password)
        except (OSError, ValueError) as exc:
            files = [f"{key}={path}" for key, path in (("ssl_ca", self.ca), ("ssl_cert", self.cert)) if path]
            files += [f"ssl_key={self.key}"] if self.key else []
            hint = "the files and ssl_key_password" if self.cert else "the file"
            raise SetupError(f"cannot load the TLS files ({', '.join(files)}): {exc}; check {hint}") from None
        # Python 3.13 turns on strict X.509 checks that the certificates MySQL generates for
        # itself fail; PyMySQL turns them off for that reason, and so does this context.
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        context.check_hostname = self.verify_identity
        context.verify_mode = ssl.CERT_REQUIRED if self.verify_cert else ssl.CERT_NONE
        return context

    def refused(self, error: ssl.SSLCertVerificationError) -> str:
        """Why the server's certificate was refused, naming the option to change."""
        detail = str(error.verify_message or error.reason or error).rstrip(".")
        if error.verify_code in _NAME_MISMATCHES:
            return (
                f"host name mismatch: {detail}; connect by a name the certificate lists, or set "
                "ssl_verify_identity=false to check only that a trusted CA signed it (for a server "
                "reached by IP address)"
            )
        trusted = (
            f"the CA in ssl_ca={self.ca}" if self.ca else "any CA of the system's store, used without ssl_ca"
        )
        return (
            f"certificate not trusted: it is not signed by {trusted} ({detail}); set ssl_ca to the CA "
            "that signed it, or ssl_verify_cert=false to accept any certificate (encrypted, but an "
            "impostor would not be noticed)"
        )


def _tls(found: Mapping[str, object]) -> tuple[_TLS | None, bool]:
    """The TLS that the (already read) TLS options ask for, and whether they turn TLS off; neither
    leaves PyMySQL's default (no TLS, or unverified TLS when the server offers it)."""
    asked = (["ssl=true"] if found.get("ssl") is True else []) + [k for k in _ASKS_FOR_TLS if k in found]
    refused = ["ssl=false"] if found.get("ssl") is False else []
    refused += ["ssl_disabled=true"] if found.get("ssl_disabled") is True else []
    if refused and asked:
        raise SettingError(
            f"{refused[0]} turns TLS off, but {', '.join(asked)} asks for TLS; keep one or the other"
        )
    if refused or not asked:
        return None, bool(refused)
    verify_cert = found.get("ssl_verify_cert", True) is True
    verify_identity = found.get("ssl_verify_identity", verify_cert) is True
    if verify_identity and not verify_cert:
        raise SettingError(
            "ssl_verify_identity=true needs ssl_verify_cert=true: a host name on a certificate no "
            "trusted CA signed proves nothing"
        )
    if "ssl_key" in found and "ssl_cert" not in found:
        raise SettingError("option ssl_key needs ssl_cert, the client certificate that the key belongs to")
    files = {key.removeprefix("ssl_"): str(found[key]) for key in _TLS_FILES if key in found}
    return _TLS(**files, verify_cert=verify_cert, verify_identity=verify_identity), False


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Everything a backend needs to connect: plain, picklable, and never printed with its password."""

    scheme: str = "mysql"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Every host of a list (``mysql://u@h1:3306,h2:3306/db``), of which the backend uses the
    #: one that accepts writes; empty for one host (``host`` and ``port``, the list's first).
    hosts: tuple[tuple[str, int], ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str = DEFAULT_DATABASE
    table: str = DEFAULT_TABLE
    create_db: bool = False
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    connect_retries: int = 0
    connect_wait: float = DEFAULT_CONNECT_WAIT
    late_reply_wait: float = DEFAULT_LATE_REPLY_WAIT
    #: Every driver and TLS option as given (read and checked). Shown only by ``redacted_url``:
    #: ``ssl_key_password`` is among them.
    options: tuple[tuple[str, object], ...] = field(default=(), repr=False)
    #: The TLS asked for (None: none asked), and whether the options turn TLS off altogether.
    tls: _TLS | None = None
    tls_off: bool = False

    @property
    def where(self) -> str:
        """``host:port`` for messages (IPv6 hosts in brackets), each host of a list."""
        return ",".join(host_port(host, port) for host, port in self.hosts or ((self.host, self.port),))

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see: password and password-like options as ``***``."""
        own = read.changed(self, OWN_OPTIONS)
        query = [(key, str(v).lower() if isinstance(v, bool) else v) for key, v in (*own, *self.options)]
        auth = credentials(self.user, self.password or None) if self.user is not None else ""
        tail = shown(query, lambda key: "password" in key)
        return f"{self.scheme}://{auth}{self.where}/{quote(self.database)}{tail}"

    def secrets(self) -> tuple[str, ...]:
        return read.secrets_of(self.password, self.tls.key_password if self.tls else None)


def _hosts(given: object, port: object) -> tuple[tuple[str, int], ...]:
    """A list of hosts (``h1:3306,h2``; a host without a port gets ``port``), or () for one."""
    if not isinstance(given, str) or "," not in given:
        return ()
    pairs = host_list(given)
    if any(not host for host, _ in pairs):
        raise SettingError(f"host list {given!r} has an empty host: write h1:3306,h2:3306")
    return tuple((host, read.port(number or port or DEFAULT_PORT)) for host, number in pairs)


_GO_DSN = re.compile(
    r"^(?:(?P<user>[^:@]*)(?::(?P<password>.*))?@)?(?:tcp)?\((?P<host>[^()]*)\)/(?P<db>[^?]*)(?:\?(?P<q>.*))?$"
)
#: Parameters of a go-sql-driver DSN that mean nothing here (per-call timeouts replace them).
_GO_IGNORED = ("parseTime", "loc", "readTimeout", "writeTimeout")
_GO_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")
_GO_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
#: go-sql-driver's ``tls`` values as this backend's options (``preferred`` is the default here too).
_GO_TLS: dict[str, tuple[tuple[str, str], ...]] = {
    "true": (("ssl", "true"),),
    "skip-verify": (("ssl_verify_cert", "false"),),
    "false": (("ssl_disabled", "true"),),
    "preferred": (),
}


def _parse_dsn(dsn: str) -> BackendURL:
    """A ``mysql://`` URL, or go-master's base DSN in go-sql-driver form ``user:pass@tcp(host:port)/db``."""
    if "://" in dsn:
        return read.dsn_url(dsn, _SCHEMES, "mysql:// or mariadb://")
    match = _GO_DSN.match(dsn)
    if match is None:
        raise SettingError("dsn must look like mysql://user:pass@host:3306/db or user:pass@tcp(host:3306)/db")
    host, _, port_text = match["host"].rpartition(":") if ":" in match["host"] else (match["host"], "", "")
    query: list[tuple[str, str]] = []
    for pair in (match["q"] or "").split("&"):
        key, _, value = pair.partition("=")
        if not key or key in _GO_IGNORED:
            continue
        duration = _GO_DURATION.match(value)
        if key == "timeout" and duration is not None:
            query.append(("connect_timeout", str(float(duration[1]) * _GO_UNITS[duration[2]])))
        elif key == "tls":
            if value not in _GO_TLS:
                raise SettingError(
                    f"dsn option tls={value!r}: use tls=true (with ssl_ca=/path/to/ca.pem for a private CA), "
                    "tls=skip-verify, tls=preferred or tls=false; registered TLS configs do not exist here"
                )
            query += _GO_TLS[value]
        else:
            query.append((key, value))
    return BackendURL(
        scheme="mysql",
        username=match["user"] or None,
        password=match["password"],
        host=host or None,
        port=read.port(port_text) if port_text else None,
        path="/" + match["db"],
        query=tuple(query),
    )


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """Merge a URL with keyword overrides into checked settings, or raise ``SettingError``."""
    found = dict(host=url.host, port=url.port, user=url.username, password=url.password)
    parts, options = merge(url, given, {**found, "database": url.path.removeprefix("/") or None})
    database = parts["database"] or DEFAULT_DATABASE
    if not isinstance(database, str) or not 0 < len(database) <= 64 or re.search(r"[`/\\.\x00]", database):
        raise SettingError(f"database name {database!r} is not allowed: at most 64 characters, no ` / \\ .")
    own = {key: options.pop(key) for key in OWN_OPTIONS if key in options}
    refuse(options, _MANAGED)
    driver: list[tuple[str, object]] = []
    for key, value in options.items():
        reader = DRIVER_OPTIONS.get(key) or TLS_OPTIONS.get(key)
        if reader is None:
            known = ", ".join((*OWN_OPTIONS, *DRIVER_OPTIONS, *TLS_OPTIONS))
            raise SettingError(f"unknown MySQL option {key!r}; known options: {known}")
        driver.append((key, reader(key, value)))
    tls, tls_off = _tls(dict(driver))
    user, password = parts["user"], parts["password"]
    hosts = _hosts(parts["host"], parts["port"])
    first_host, first_port = hosts[0] if hosts else (parts["host"] or DEFAULT_HOST, parts["port"])
    return _Settings(
        scheme=url.scheme if url.scheme in _SCHEMES else "mysql",
        host=read.text("host", first_host),
        port=read.port(first_port or DEFAULT_PORT),
        hosts=hosts,
        user=None if user is None else read.text("user", user),
        password=None if password is None else read.text("password", password),
        database=database,
        table=read.identifier("table", own.get("table") or DEFAULT_TABLE),
        create_db=read.flag("create_db", own.get("create_db", False)),
        connect_timeout=read.seconds("connect_timeout", own.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)),
        connect_retries=read.whole("connect_retries", own.get("connect_retries", 0), _MOST_RETRIES),
        connect_wait=read.seconds("connect_wait", own.get("connect_wait", DEFAULT_CONNECT_WAIT)),
        late_reply_wait=read.seconds("late_reply_wait", own.get("late_reply_wait", DEFAULT_LATE_REPLY_WAIT)),
        options=tuple(driver),
        tls=tls,
        tls_off=tls_off,
    )


# -- the connection --------------------------------------------------------------------------


class _LateReplyError(TimeoutError):
    """The deadline passed before the reply began: the stream is whole and owes that one reply."""


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection whose every socket read and write ends by one deadline (PyMySQL's
    timeouts are per socket operation, so they are re-armed before each packet). Every use of the
    driver's private API is kept inside this class."""

    deadline: float = math.inf
    connect_cap: float = DEFAULT_CONNECT_TIMEOUT
    #: Once the handshake is done: wait for a reply's first byte with ``poll``, so that a
    #: deadline passing there leaves the stream whole (a socket timeout inside PyMySQL's
    #: buffered reader would break it for good).
    keeps_late: bool = False
    #: When the hosts of a list are to be asked again which accepts writes (monotonic).
    resurvey_at: float = math.inf
    #: When the statement whose reply is still owed was sent (monotonic), or None.
    owed_since: float | None = None
    _sent_at: float = 0.0
    _awaiting: bool = False
    _result: Any
    #: TLS was asked for: a server that does not offer it is refused before any credential is sent.
    tls_required: bool = False

    def __init__(self, *args: Any, tls_contexts: dict[str, ssl.SSLContext], **kwargs: Any) -> None:
        self._tls_contexts = tls_contexts
        super().__init__(*args, **kwargs)

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        """The TLS context for these TLS options, made once per backend: PyMySQL makes one for every
        connection, even without TLS options, and loading the system's CA store costs 30-40 ms of
        CPU, most of a reconnect on an idle host and several hundred ms on a busy one."""
        if not isinstance(sslp, dict):
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        key = repr(sorted(sslp.items()))
        context = self._tls_contexts.get(key)
        if context is None:
            context = self._tls_contexts[key] = super()._create_ssl_ctx(sslp)
        return context

    def _request_authentication(self) -> None:
        """Refuse a server that does not offer TLS when TLS is required, before the credentials go
        (PyMySQL before 1.2 carried on in plain text: a man in the middle cleared the TLS flag)."""
        if self.tls_required and not self.server_capabilities & CLIENT.SSL:
            raise pymysql.OperationalError(CR.CR_SSL_CONNECTION_ERROR, "the server does not offer TLS")
        super()._request_authentication()

    def _execute_command(self, command: int, sql: str | bytes) -> None:
        super()._execute_command(command, sql)
        self._sent_at, self._awaiting = time.monotonic(), True

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        if self._awaiting and self.keeps_late:
            self._await_reply()
        self._awaiting = False
        self._read_timeout = seconds_left(self.deadline)
        return super()._read_packet(packet_type)

    def _await_reply(self) -> None:
        """Wait for the first byte of a reply until the deadline; raise ``_LateReplyError`` if none came.
        (Nothing else can be buffered: earlier replies were read to their end, and a server sends
        nothing unasked but a farewell before it closes.)"""
        pending = getattr(self._sock, "pending", None)
        if pending is not None and pending() > 0:
            return  # TLS already holds decrypted bytes the socket's poll cannot see
        if not self._readable(math.ceil(seconds_left(self.deadline) * 1000)):
            self.owed_since = self._sent_at
            raise _LateReplyError(
                f"no reply within the deadline (sent {time.monotonic() - self._sent_at:.3f} s ago)"
            )

    def _readable(self, wait_ms: int) -> bool:
        poller = select.poll()
        poller.register(self._sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(wait_ms))

    def settle(self) -> None:
        """Read and throw away the reply an earlier call gave up on, before this call sends anything;
        ``_LateReplyError`` while it has still not begun. An error reply (a duplicate key) still
        ends the reply; a lost connection raises, and as nothing of this call went, it may reconnect."""
        if self.owed_since is None:
            return
        self._sent_at, self._awaiting, self._next_seq_id = self.owed_since, True, 1
        try:
            self._read_query_result()
            while self._result is not None and self._result.has_next:
                self.next_result()
        except pymysql.MySQLError:
            if self._sock is None:
                raise
        self._result, self.owed_since = None, None

    def _write_bytes(self, data: bytes) -> None:
        self._write_timeout = seconds_left(self.deadline)
        super()._write_bytes(data)

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        """``SET NAMES`` and our ``sql_mode`` in one statement, where PyMySQL would send two: one
        round trip less per reconnect, which through a slow network is all round trips."""
        encoding = charset_by_name(charset).encoding
        names = f"NAMES {charset}" + (f" COLLATE {collation}" if collation else "")
        self._execute_command(COMMAND.COM_QUERY, f"SET {names}, sql_mode = '{SQL_MODE}'")
        self._read_packet()
        self.charset, self.encoding, self.collation = charset, encoding, collation

    def begin_call(self, deadline: float) -> None:
        """Bound everything until the next ``begin_call`` by ``deadline`` (a monotonic time)."""
        self.deadline = deadline
        self.connect_timeout = seconds_left(deadline, self.connect_cap)

    def ready(self, late_reply_wait: float) -> bool:
        """Whether this idle connection can take a statement, after reading a late reply still owed:
        False (and closed) when the server closed it, the owed reply is older than
        ``late_reply_wait`` or the connection is lost; ``_LateReplyError`` while it may still come."""
        if self._sock is None:
            return False
        owed = self.owed_since
        if owed is None:
            ready = not self._readable(0)  # only EOF or an error can be there
        elif time.monotonic() - owed > late_reply_wait:
            ready = False
        else:
            try:
                self.settle()
                ready = True
            except _LateReplyError:
                raise
            except (pymysql.MySQLError, OSError):
                ready = False
        if not ready:
            self._force_close()
        return ready

    def goodbye(self) -> None:
        """Close, saying goodbye (COM_QUIT) only when the stream is in step; never raises."""
        if self.owed_since is None and self._sock is not None:
            self.begin_call(time.monotonic() + _CLOSE_TIMEOUT)
            with contextlib.suppress(pymysql.MySQLError, OSError):
                self.close()
        self._force_close()


def _error_number(exc: BaseException) -> int | None:
    code = exc.args[0] if isinstance(exc, pymysql.MySQLError) and exc.args else None
    return code if isinstance(code, int) else None


def _execute(conn: _Connection, statement: Statement) -> list[Row]:
    """The rows of the statement's last result (of several when it is more than one statement),
    or for a write with a read-back its SELECT's when the write matched exactly one row. A first
    claim's duplicate key is the losing answer, not an error: the server stopped at it, so the
    connection is still in step and is kept."""
    with conn.cursor() as cursor:
        try:
            matched = cursor.execute(statement.sql, statement.params)
        except pymysql.IntegrityError as exc:
            if statement.read_back and _error_number(exc) == ER.DUP_ENTRY:
                return []
            raise
        while cursor.nextset():
            pass
        rows = list(cursor.fetchall())
    return rows if matched == 1 or not statement.read_back else []


#: How often a primary with semi-synchronous replication on is asked whether it still is.
SEMI_SYNC_WATCH = 5.0
#: The replication settings a failover depends on (MariaDB's names, and MySQL 8's).
_REPLICATION_VARIABLES = (
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('rpl_semi_sync_master_enabled', "
    "'rpl_semi_sync_master_wait_point', 'rpl_semi_sync_master_timeout', 'rpl_semi_sync_source_enabled', "
    "'rpl_semi_sync_source_wait_point', 'rpl_semi_sync_source_timeout')"
)
_REPLICATION_STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', "
    "'Rpl_semi_sync_source_status', 'Slaves_connected')"
)


class _Driver:
    """How the session opens, checks, arms, closes and judges this backend's PyMySQL connections."""

    errors: tuple[type[BaseException], ...] = (pymysql.MySQLError, OSError, UnicodeError, SetupError)
    #: The session, for the deadline of the call in progress (``usable`` may wait for a late reply).
    session: Session[_Connection]

    def __init__(self, settings: _Settings, statements: Statements) -> None:
        self.settings = settings
        self.statements = statements
        #: What a failover can lose: said once, and again when it changes (a forked child that
        #: sees what its parent saw says nothing).
        self.report = durability.Report()
        #: The replication variables and status last read.
        self.replication: dict[str, str] = {}
        #: When to read ``Rpl_semi_sync_master_status`` again (``time.monotonic()``); never
        #: while semi-synchronous replication is off.
        self.watch_at = math.inf
        self._fresh()

    def _fresh(self) -> None:
        """This process's state: nothing is known yet in a new process."""
        self.pid = os.getpid()
        self.connected_once = False
        #: The server whose replication settings were read in this process: a reconnect to the
        #: same one skips them (the watch below still sees a fallback).
        self.surveyed: tuple[str, int] | None = None
        #: The table was made or checked in this process: a reconnect skips those round trips,
        #: which through a 100 ms delay would take most of a one-second lease's deadline.
        self.table_ready = False
        #: TLS contexts by their options, reused by every connection (see ``_create_ssl_ctx``).
        self.tls_contexts: dict[str, ssl.SSLContext] = {}
        #: The context that checks what ``settings.tls`` asks for, once made.
        self.verifying: ssl.SSLContext | None = None

    def open(self, deadline: float) -> _Connection:
        """Connect, retrying refused connections ``connect_retries`` times on the first connect only."""
        if self.pid != os.getpid():
            self._fresh()
        settings = self.settings
        retries = 0 if self.connected_once else settings.connect_retries
        while True:
            try:
                conn = self._open_once(deadline)
            except pymysql.OperationalError as exc:
                transient = _error_number(exc) in (CR.CR_CONN_HOST_ERROR, ER.CON_COUNT_ERROR)
                if not transient or retries <= 0 or time.monotonic() + settings.connect_wait >= deadline:
                    raise
                retries -= 1
                time.sleep(settings.connect_wait)
            else:
                self.connected_once = True
                return conn

    def usable(self, conn: _Connection) -> bool:
        """False when the connection is dead, or chosen from a list of hosts and due for another
        survey (an old primary may be back beside the new one)."""
        if time.monotonic() >= conn.resurvey_at:
            return False
        conn.begin_call(self.session.deadline)
        return conn.ready(self.settings.late_reply_wait)

    def arm(self, conn: _Connection, deadline: float) -> None:
        conn.begin_call(deadline)

    def close(self, conn: _Connection) -> None:
        conn.goodbye()

    def classify(self, exc: BaseException) -> Fault:
        """The kind of ``exc``; a table dropped behind our back is made again on the next connect."""
        settings, code = self.settings, _error_number(exc)
        cause = str(exc.args[1]) if isinstance(exc, pymysql.MySQLError) and len(exc.args) > 1 else str(exc)
        original = getattr(exc, "original_exception", None) or exc.__context__
        if code == ER.NO_SUCH_TABLE:
            self.table_ready = False
        if isinstance(exc, _LateReplyError):
            # Only the reply is late; the connection stays for it (see "Late replies" above).
            return Fault("late", keep=True)
        if isinstance(exc, SetupError):
            return Fault("setup", cause)
        if isinstance(original, socket.gaierror):
            return Fault("unresolved", str(original), repr(settings.host))
        if isinstance(original, ssl.SSLCertVerificationError) and settings.tls is not None:
            return Fault("tls", settings.tls.refused(original))
        if isinstance(original, ssl.SSLError):
            return Fault("tls", str(original))
        if isinstance(exc, TimeoutError) or isinstance(original, TimeoutError):
            if code == CR.CR_CONN_HOST_ERROR and time.monotonic() < self.session.deadline:
                return Fault("connect_timeout", cause, f"{settings.connect_timeout:g}")
            return Fault("timeout", cause)
        if isinstance(exc, UnicodeError):
            return Fault("encoding", cause)
        table, database = f"lock table {self.statements.label}", f"database {settings.database!r}"
        kinds: dict[int | None, Fault] = {
            ER.ACCESS_DENIED_ERROR: Fault("login", cause),
            _ACCESS_DENIED_NO_PASSWORD: Fault("login", cause),
            ER.DBACCESS_DENIED_ERROR: Fault("denied", cause, f"grant this user {database}"),
            ER.TABLEACCESS_DENIED_ERROR: Fault(
                "denied", cause, f"the user needs SELECT, INSERT and UPDATE on {table}"
            ),
            ER.BAD_DB_ERROR: Fault(
                "no_database", f"{cause}; add ?create_db=true (create_db=True) or create it", database
            ),
            ER.NO_SUCH_TABLE: Fault("no_table", cause, table),
            ER.OPTION_PREVENTS_STATEMENT: Fault("read_only", cause),
            CR.CR_SSL_CONNECTION_ERROR: Fault(
                "tls",
                "the server does not offer TLS, which the ssl options ask for; turn TLS on at the server "
                "(or remove the ssl options to connect without it)",
            ),
            CR.CR_CONN_HOST_ERROR: Fault("unreachable", cause),
            CR.CR_SERVER_LOST: Fault("lost", cause),
            CR.CR_SERVER_GONE_ERROR: Fault("lost", cause),
        }
        kind = type(exc).__name__ if code is None else f"{type(exc).__name__} {code}"
        return kinds.get(code, Fault("other", f"{kind}: {cause}"))

    def _connect(
        self, deadline: float, database: str | None, server: tuple[str, int] | None = None
    ) -> _Connection:
        settings, tls = self.settings, self.settings.tls
        host, port = server or (settings.host, settings.port)
        options: dict[str, object] = {"charset": "utf8mb4"}
        options.update((key, value) for key, value in settings.options if key not in TLS_OPTIONS)
        if tls is not None:
            self.verifying = options["ssl"] = self.verifying or tls.context()
        elif settings.tls_off:
            options["ssl_disabled"] = True
        conn = _Connection(
            host=host,
            port=port,
            user=settings.user,
            password=settings.password or "",
            database=database,
            client_flag=_CLIENT_FLAGS,
            autocommit=True,
            connect_timeout=settings.connect_timeout,
            defer_connect=True,
            tls_contexts=self.tls_contexts,
            **options,
        )
        conn.connect_cap = settings.connect_timeout
        conn.tls_required = tls is not None
        conn.begin_call(deadline)
        conn.connect()
        conn.keeps_late = True
        return conn

    def _primary(self, deadline: float) -> _Connection:
        """Of a list of hosts, a connection (with no database yet) to the one that accepts
        writes (:func:`only_writable`)."""
        conn = only_writable(
            self.settings.hosts,
            deadline,
            self._ask,
            _Connection.goodbye,
            promote="promote a replica (SET GLOBAL read_only=0) or list the primary",
            demote="set read_only=1 on each that is not the primary",
        )
        conn.begin_call(deadline)  # the rest of the connect has all the time left
        conn.resurvey_at = time.monotonic() + RESURVEY
        return conn

    def _ask(self, server: tuple[str, int], until: float) -> tuple[_Connection | None, str]:
        """Whether ``server`` accepts writes (``@@global.read_only`` is 0): a connection to it
        when it does, and what it said, for messages."""
        where = host_port(*server)
        try:
            conn = self._connect(until, None, server)
        except self.errors as exc:
            return None, f"{where} {self.classify(exc).cause or type(exc).__name__}"
        try:
            rows = _execute(conn, Statement("SELECT @@global.read_only"))
        except BaseException as exc:
            conn.goodbye()
            if isinstance(exc, self.errors):
                return None, f"{where} {self.classify(exc).cause or type(exc).__name__}"
            raise
        if rows and not rows[0][0]:
            return conn, f"{where} writable"
        conn.goodbye()
        return None, f"{where} read-only"

    def survey(self, conn: _Connection) -> None:
        """Read the server's replication settings and report what a failover can lose."""
        rows = _execute(conn, Statement(_REPLICATION_VARIABLES)) + _execute(
            conn, Statement(_REPLICATION_STATUS)
        )
        self.replication = {str(name).lower(): str(value) for name, value in rows}
        self.surveyed = conn.host, conn.port
        self._judge(conn)

    def watch(self, conn: _Connection) -> None:
        """Read ``Rpl_semi_sync_master_status`` again when it is due, and report a fallback to
        asynchronous replication (or its end): MariaDB falls back without a word to clients."""
        if time.monotonic() < self.watch_at:
            return
        rows = _execute(conn, Statement(_REPLICATION_STATUS))
        self.replication |= {str(name).lower(): str(value) for name, value in rows}
        self._judge(conn)

    def _judge(self, conn: _Connection) -> None:
        found = self.replication
        self.report.see(
            durability.mysql(
                f"MySQL at {host_port(conn.host, conn.port)}", found, len(self.settings.hosts) or 1
            )
        )
        enabled = "ON" in (
            found.get("rpl_semi_sync_master_enabled"),
            found.get("rpl_semi_sync_source_enabled"),
        )
        self.watch_at = time.monotonic() + SEMI_SYNC_WATCH if enabled else math.inf

    def _creatable(self, exc: pymysql.OperationalError) -> bool:
        """Whether ``exc`` says the database is missing and the settings ask to create it."""
        return _error_number(exc) == ER.BAD_DB_ERROR and self.settings.create_db

    def _open_once(self, deadline: float) -> _Connection:
        """A new connection to the database (created first if asked and missing), with the lock
        table created if absent and checked, once per process. Of a list of hosts, the one that
        accepts writes (``_primary``)."""
        database = self.settings.database
        if self.settings.hosts:
            conn, create = self._primary(deadline), False
            try:
                conn.select_db(database)
            except pymysql.OperationalError as exc:
                if not self._creatable(exc):
                    conn.goodbye()
                    raise
                create = True
        else:
            try:
                conn, create = self._connect(deadline, database), False
            except pymysql.OperationalError as exc:
                if not self._creatable(exc):
                    raise
                conn, create = self._connect(deadline, None), True
        try:
            if create:
                _execute(conn, Statement(f"CREATE DATABASE IF NOT EXISTS `{database}`"))
                conn.select_db(database)
            if not self.table_ready:
                # A user without CREATE privilege is fine as long as the table exists.
                denied = ER.TABLEACCESS_DENIED_ERROR
                self.statements.prepare(partial(_execute, conn), lambda exc: _error_number(exc) == denied)
                self.table_ready = True
            if self.surveyed != (conn.host, conn.port):
                self.survey(conn)
        except BaseException:
            conn.goodbye()
            raise
        return conn


# -- the backend ---------------------------------------------------------------------------


class MySQLBackend(ServerBackend[_Settings]):
    """Lock records in a MySQL/MariaDB table; picklable configuration that connects lazily.

    The keywords are go-master's and the URL's options (paths may be ``Path`` objects), over a
    base ``dsn`` (a URL or a go-sql-driver DSN). Bad settings raise ``ValueError`` here. One
    connection per process, used under a lock by one thread at a time.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        user: str | None = None,
        password: str | None = None,
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        table: str | None = None,
        create_db: bool | None = None,
        connect_timeout: float | None = None,
        connect_retries: int | None = None,
        connect_wait: float | None = None,
        late_reply_wait: float | None = None,
        **driver_options: object,
    ) -> None:
        given: dict[str, object] = dict(user=user, password=password, host=host, port=port, database=database)
        given |= dict(table=table, create_db=create_db, late_reply_wait=late_reply_wait, **driver_options)
        given |= dict(
            connect_timeout=connect_timeout, connect_retries=connect_retries, connect_wait=connect_wait
        )
        base = BackendURL(scheme="mysql")
        self._setup(or_raise(checked(lambda: _settings(base if dsn is None else _parse_dsn(dsn), given))))

    def _start(self) -> None:
        settings = self._settings
        self._sql = Statements(MYSQL, settings.table, label=f"`{settings.database}`.`{settings.table}`")
        self._driver = _Driver(settings, self._sql)
        self._session = self._driver.session = session_for(self._driver, settings)

    @property
    def _conn(self) -> _Connection | None:
        """This process's connection, if it has one."""
        return self._session.conn

    def _execute(self, conn: _Connection, statement: Statement) -> list[Row]:
        """``statement``'s rows, after a look at semi-synchronous replication when one is due."""
        self._driver.watch(conn)
        return _execute(conn, statement)


def from_url(url: BackendURL) -> Result[MySQLBackend, str]:
    """``mysql://user:pass@host:3306/db?table=gomaster_lock&create_db=true`` (or ``mariadb://``),
    checked now; nothing connects yet. A ``Failure`` says what to change, never the password."""
    if url.scheme not in _SCHEMES:
        return Failure(f"not a MySQL URL: {url.redacted}")
    return checked(lambda: MySQLBackend._of(_settings(url, {})), url.redacted)
