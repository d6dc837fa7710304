"""MySQL and MariaDB: the lock record is a row of a table, judged by the server's clock.

Every step is ONE autocommit statement (observe is one SELECT), so a node that freezes between
steps never holds a transaction, a row lock or a metadata lock open. The clock is
``UTC_TIMESTAMP(6)``, which does not depend on the session or server time zone, and the times
are ``DATETIME(6)`` columns, which MySQL never converts between zones. Python turns them into
epoch seconds by treating them as UTC.

Reading back what a claim or renewal wrote
------------------------------------------
MySQL has no ``UPDATE ... RETURNING`` (MariaDB only has it for INSERT and DELETE), yet the
caller needs the times the server wrote. Claims and renewals are therefore sent as one
multi-statement query: the write, then ``SELECT`` of the row ``WHERE name AND holder AND
token`` are ours. That is one round trip, and each statement still commits on its own. The
read-back is safe because, once the write has matched one row, that row carries our holder and
our fresh token: no other node can change it until the lease expires (a ttl away), and only our
own renewals (serialised by this object's lock) or an operator's release or revoke could
touch it first. If an operator cleared the holder in between, the SELECT finds nothing and the
step reports a ``Conflict``/``Lost``, which is the truth by then. The connection is opened with
``CLIENT.MULTI_STATEMENTS``; that is safe here because table names are validated identifiers
and every value is a bound parameter. Observe, release, revoke and names are single statements.

Row counts come from ``CLIENT.FOUND_ROWS`` (matched rows, not changed rows), and claims use
``UPDATE ... WHERE`` (or a plain ``INSERT`` whose duplicate-key error means ``Conflict``),
never ``INSERT ... ON DUPLICATE KEY UPDATE``, whose row count is ambiguous.

Timeouts
--------
Every call gets a deadline. The connection (a small PyMySQL subclass) re-arms the socket
timeout to what is left of that deadline before each packet it reads or writes, and connecting
uses what is left as ``connect_timeout``, so a call against a frozen server returns within its
timeout plus a millisecond or so. Before reusing an idle connection the backend checks that the
server has not closed it (a restart, ``wait_timeout``): that costs one ``poll`` and lets the
first call after a server restart succeed. Host name resolution is the one part a socket
timeout does not bound; use an IP address or a local resolver where that matters.

Late replies
------------
When a call's deadline passes after its statement was sent but before any byte of the reply
came, the protocol stream is still whole: exactly one reply is owed. The connection is then
kept, and the next call first reads that reply and throws it away (the election already took
the step as failed, so its answer must not be used), then sends its own statement. A frozen or
overloaded server thus costs no reconnects: reconnecting during a freeze only queues dead
handshakes in the server's listen backlog, and after the thaw a starved server spends its CPU
on them (measured: after a 2 s freeze at load 10, reconnects kept failing for 1.5 s). A reply
that has not begun ``late_reply_wait`` seconds after its statement was sent (5 by default) is
given up with its connection, for a host that died or a stream a middlebox broke. Any other
error, and a timeout in the middle of a reply, drop the connection and the next call
reconnects.

TLS
---
Asking for TLS (``ssl=true`` or any of ``ssl_ca``, ``ssl_cert``, ``ssl_key``,
``ssl_verify_cert``, ``ssl_verify_identity``) makes it required and verified: the server's
chain against ``ssl_ca`` (else the system's CA store) and its host name, unless
``ssl_verify_identity=false`` (chain only) or ``ssl_verify_cert=false`` (nothing) says
otherwise. The backend builds that context itself, once, because PyMySQL given only ``ssl_ca``
verifies nothing, and before 1.2 goes on in plain text when the server does not offer TLS.
Without TLS options PyMySQL's default stays: no TLS, or in recent versions TLS when the server
offers it, unverified either way. ``ssl=false`` or ``ssl_disabled=true`` turns TLS off.

Names are stored as ``VARBINARY``: binary comparison is exact, whereas even ``utf8mb4_bin`` is
a PAD SPACE collation in which ``'a'`` and ``'a '`` are the same key.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import pymysql
from pymysql.charset import charset_by_name
from pymysql.constants import CLIENT, COMMAND, CR, ER
from pymysql.protocol import MysqlPacket
from returns.io import IOFailure, IOResult, IOSuccess
from returns.result import Failure, Result, Success

from gomaster.backends.base import check_identifier, timeout_error
from gomaster.backends.url import REDACTED, BackendURL, parse_url, scrub
from gomaster.core.decide import Claim
from gomaster.core.errors import BackendError, Conflict, Lost
from gomaster.core.record import MAX_TOKEN, LockRecord, MalformedRecord, Observation, parse_record

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
#: Strict mode turns truncation of holder/version/host into an error instead of a silent change.
SQL_MODE = "TRADITIONAL"
#: Socket timeout used once the deadline has passed: enough to drain bytes already received.
_MIN_SOCKET_TIMEOUT = 0.001
#: How long ``close()`` lets the polite goodbye (COM_QUIT) take.
_CLOSE_TIMEOUT = 0.5
_MICROSECONDS = 1_000_000
_MAX_PORT = 65535
#: PyMySQL refuses a connect timeout over a year; no wait here needs more.
_MAX_SECONDS = 365 * 24 * 3600.0
_CLIENT_FLAGS = CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS
_SCHEMES = ("mysql", "mariadb")
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)

NOW = "UTC_TIMESTAMP(6)"
FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")
COLUMNS = ", ".join(FIELDS)
#: Column -> the data types it may have. Times must be DATETIME: TIMESTAMP converts by time zone.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("varbinary", "varchar", "binary", "char"),
    "holder": ("varbinary", "varchar", "binary", "char"),
    "version": ("varchar", "varbinary", "char", "binary", "text", "tinytext", "mediumtext", "longtext"),
    "token": ("bigint",),
    "acquired_at": ("datetime",),
    "renewed_at": ("datetime",),
    "expires_at": ("datetime",),
    "host": ("varchar", "varbinary", "char", "binary", "text", "tinytext", "mediumtext", "longtext"),
    "pid": ("bigint", "int", "mediumint"),
}

_T = TypeVar("_T")
_Refusal = TypeVar("_Refusal", Conflict, Lost)
_Row = tuple[object, ...]


def schema(table: str) -> str:
    """The lock table's DDL (``table`` must already be a checked identifier).

    ``name`` holds up to 200 characters of UTF-8 (800 bytes), within InnoDB's 3072-byte key limit.
    """
    text = "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL"
    return f"""CREATE TABLE IF NOT EXISTS `{table}` (
    name        VARBINARY(800) NOT NULL PRIMARY KEY,
    holder      VARBINARY(255) NOT NULL,
    version     {text},
    token       BIGINT NOT NULL,
    acquired_at DATETIME(6) NOT NULL,
    renewed_at  DATETIME(6) NOT NULL,
    expires_at  DATETIME(6) NOT NULL,
    host        {text},
    pid         BIGINT NOT NULL
) ENGINE=InnoDB"""


# -- configuration -------------------------------------------------------------------------


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _text_option(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise _SettingError(f"option {key} must be text, not {type(value).__name__}")
    return value


def _bool_option(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise _SettingError(f"option {key}={value!r} is not a boolean; use true or false")


def _seconds_option(key: str, value: object) -> float:
    try:
        seconds = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else -1
    except ValueError:
        seconds = -1
    if not 0 < seconds <= _MAX_SECONDS:
        raise _SettingError(f"option {key}={value!r} must be a positive number of seconds, at most a year")
    return seconds


def _count_option(key: str, value: object) -> int:
    try:
        count = int(value) if isinstance(value, str | int) and not isinstance(value, bool) else -1
    except ValueError:
        count = -1
    if count < 0:
        raise _SettingError(f"option {key}={value!r} must be a whole number, 0 or more")
    return count


def _charset_option(key: str, value: object) -> str:
    name = _text_option(key, value)
    try:
        charset_by_name(name)
    except KeyError:
        raise _SettingError(f"option {key}={name!r} is not a character set PyMySQL knows") from None
    return name


def _file_option(key: str, value: object) -> str:
    """A path that exists now, so a typo fails at start-up rather than at the first connect."""
    path = os.fspath(value) if isinstance(value, os.PathLike) else _text_option(key, value)
    if not isinstance(path, str) or not os.path.exists(path):
        raise _SettingError(f"option {key}: {path!r} does not exist")
    return path


#: Query parameters passed on to PyMySQL, with how to read each from a URL.
DRIVER_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "charset": _charset_option,
    "unix_socket": _text_option,
    "bind_address": _text_option,
    "program_name": _text_option,
    "server_public_key": _text_option,
}
#: TLS options (see ``_tls``); the backend builds the TLS context from them itself.
TLS_OPTIONS: dict[str, Callable[[str, object], object]] = {
    "ssl": _bool_option,
    "ssl_ca": _file_option,
    "ssl_cert": _file_option,
    "ssl_key": _file_option,
    "ssl_key_password": _text_option,
    "ssl_verify_cert": _bool_option,
    "ssl_verify_identity": _bool_option,
    "ssl_disabled": _bool_option,
}
#: TLS options that ask for TLS whatever their value. ``ssl_key_password`` does not: it only
#: unlocks ``ssl_key``, and ``ssl``/``ssl_disabled`` ask for it or refuse it by their value.
_ASKS_FOR_TLS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert", "ssl_verify_identity")
#: gomaster's own query parameters.
OWN_OPTIONS = ("table", "create_db", "connect_timeout", "connect_retries", "connect_wait", "late_reply_wait")
#: Driver options this backend sets per call itself.
_MANAGED = {
    "read_timeout": "every call's own timeout bounds reads",
    "write_timeout": "every call's own timeout bounds writes",
    "autocommit": "every step is one autocommit statement",
    "client_flag": "the backend needs exactly FOUND_ROWS and MULTI_STATEMENTS",
}


class _SettingError(ValueError):
    """A configuration value that cannot work; its message says what to write instead."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _TLS:
    """TLS that the settings ask for: required, with both checks on unless an option turned one off.

    ``verify_cert`` checks that a trusted CA signed the server's certificate: the one in ``ca``,
    else the system's CA store. ``verify_identity`` checks that the certificate names the host
    connected to; it needs ``verify_cert``, since a name on a certificate nobody vouched for
    proves nothing. PyMySQL itself checks neither when given only ``ssl_ca``, which is why the
    backend builds the context instead of passing the options on.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify_cert: bool = True
    verify_identity: bool = True

    @property
    def trusted(self) -> str:
        """Who decides which certificates are trusted, for messages."""
        return (
            f"the CA in ssl_ca={self.ca}" if self.ca else "any CA of the system's store, used without ssl_ca"
        )

    def context(self) -> ssl.SSLContext:
        """A client context that checks what this asks for (this loads files: call it once)."""
        context = ssl.create_default_context(cafile=self.ca)
        # Python 3.13 turns on strict X.509 checks that the certificates MySQL generates for
        # itself fail; PyMySQL turns them off for that reason, and so does this context.
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        context.check_hostname = self.verify_identity
        context.verify_mode = ssl.CERT_REQUIRED if self.verify_cert else ssl.CERT_NONE
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key, self.key_password)
        return context


def _tls(found: Mapping[str, object]) -> tuple[_TLS | None, bool]:
    """The TLS that the (already read) TLS options ask for, and whether they turn TLS off.

    Neither asked for nor turned off leaves PyMySQL's own default: no TLS, or in recent versions
    TLS when the server offers it, checking nothing (at most it keeps out a passive eavesdropper).
    """
    asked = [key for key in _ASKS_FOR_TLS if key in found]
    if found.get("ssl") is True:
        asked.insert(0, "ssl=true")
    turned_off = (
        ("ssl=false", found.get("ssl") is False),
        ("ssl_disabled=true", found.get("ssl_disabled") is True),
    )
    refused = [option for option, off in turned_off if off]
    if refused:
        if asked:
            raise _SettingError(
                f"{refused[0]} turns TLS off, but {', '.join(asked)} asks for TLS; keep one or the other"
            )
        return None, True
    if not asked:
        return None, False
    verify_cert = found.get("ssl_verify_cert", True) is True
    verify_identity = found.get("ssl_verify_identity", verify_cert) is True
    if verify_identity and not verify_cert:
        raise _SettingError(
            "ssl_verify_identity=true needs ssl_verify_cert=true: a host name on a certificate no "
            "trusted CA signed proves nothing"
        )
    if "ssl_key" in found and "ssl_cert" not in found:
        raise _SettingError("option ssl_key needs ssl_cert, the client certificate that the key belongs to")

    def text(key: str) -> str | None:
        value = found.get(key)
        return value if isinstance(value, str) else None

    tls = _TLS(
        ca=text("ssl_ca"),
        cert=text("ssl_cert"),
        key=text("ssl_key"),
        key_password=text("ssl_key_password"),
        verify_cert=verify_cert,
        verify_identity=verify_identity,
    )
    return tls, False


@dataclass(frozen=True, slots=True, kw_only=True)
class _Settings:
    """Everything a backend needs to connect: plain, picklable, and never printed with its password."""

    scheme: str = "mysql"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
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
        """``host:port`` for messages (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def redacted_url(self) -> str:
        """The settings as a URL a user may see: password and password-like options as ``***``."""
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="") + (f":{REDACTED}" if self.password else "") + "@"
        query: list[tuple[str, object]] = []
        if self.table != DEFAULT_TABLE:
            query.append(("table", self.table))
        if self.create_db:
            query.append(("create_db", "true"))
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT:
            query.append(("connect_timeout", self.connect_timeout))
        if self.connect_retries:
            query += [("connect_retries", self.connect_retries), ("connect_wait", self.connect_wait)]
        if self.late_reply_wait != DEFAULT_LATE_REPLY_WAIT:
            query.append(("late_reply_wait", self.late_reply_wait))
        query += [(k, REDACTED if "password" in k else v) for k, v in self.options]
        tail = "&".join(f"{k}={quote(_shown(v), safe='/:*')}" for k, v in query)
        return f"{self.scheme}://{auth}{self.where}/{quote(self.database)}" + (f"?{tail}" if tail else "")


def _shown(value: object) -> str:
    """An option's value as a URL writes it (booleans as ``true``/``false``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


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
        parsed = parse_url(dsn)
        if isinstance(parsed, Failure):
            raise _SettingError(parsed.failure())
        url = parsed.unwrap()
        if url.scheme not in _SCHEMES:
            raise _SettingError(f"dsn must be a mysql:// or mariadb:// URL, not {url.scheme}://")
        return url
    match = _GO_DSN.match(dsn)
    if match is None:
        raise _SettingError(
            "dsn must look like mysql://user:pass@host:3306/db or user:pass@tcp(host:3306)/db"
        )
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
                raise _SettingError(
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
        port=_count_option("port", port_text) if port_text else None,
        path="/" + match["db"],
        query=tuple(query),
    )


def _settings(url: BackendURL, given: Mapping[str, object]) -> _Settings:
    """Merge a URL with keyword overrides into checked settings, or raise ``_SettingError``."""
    parts: dict[str, object] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "database": url.path.removeprefix("/") or None,
    }
    options: dict[str, object] = dict(url.query)
    for key, value in given.items():
        if value is None:
            continue
        if key in parts:
            parts[key] = value
        else:
            options[key] = value
    database = parts["database"] or DEFAULT_DATABASE
    if not isinstance(database, str) or not 0 < len(database) <= 64 or re.search(r"[`/\\.\x00]", database):
        raise _SettingError(f"database name {database!r} is not allowed: at most 64 characters, no ` / \\ .")
    table = _text_option("table", options.pop("table", DEFAULT_TABLE) or DEFAULT_TABLE)
    checked = check_identifier("table", table)
    if isinstance(checked, Failure):
        raise _SettingError(checked.failure())
    port = _count_option("port", parts["port"] or DEFAULT_PORT)
    if port > _MAX_PORT:
        raise _SettingError(f"port {port} is out of range")
    settings = _Settings(
        scheme=url.scheme if url.scheme in _SCHEMES else "mysql",
        host=_text_option("host", parts["host"] or DEFAULT_HOST),
        port=port,
        user=None if parts["user"] is None else _text_option("user", parts["user"]),
        password=None if parts["password"] is None else _text_option("password", parts["password"]),
        database=database,
        table=table,
        create_db=_bool_option("create_db", options.pop("create_db", False)),
        connect_timeout=_seconds_option(
            "connect_timeout", options.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        ),
        connect_retries=_count_option("connect_retries", options.pop("connect_retries", 0)),
        connect_wait=_seconds_option("connect_wait", options.pop("connect_wait", DEFAULT_CONNECT_WAIT)),
        late_reply_wait=_seconds_option(
            "late_reply_wait", options.pop("late_reply_wait", DEFAULT_LATE_REPLY_WAIT)
        ),
    )
    driver: list[tuple[str, object]] = []
    for key, value in options.items():
        if key in _MANAGED:
            raise _SettingError(f"option {key} cannot be set: {_MANAGED[key]}")
        reader = DRIVER_OPTIONS.get(key) or TLS_OPTIONS.get(key)
        if reader is None:
            known = ", ".join((*OWN_OPTIONS, *DRIVER_OPTIONS, *TLS_OPTIONS))
            raise _SettingError(f"unknown MySQL option {key!r}; known options: {known}")
        driver.append((key, reader(key, value)))
    tls, tls_off = _tls(dict(driver))
    return replace(settings, options=tuple(driver), tls=tls, tls_off=tls_off)


# -- the connection --------------------------------------------------------------------------


class _LateReplyError(TimeoutError):
    """The deadline passed before the reply began: the stream is whole and owes that one reply."""


class _Connection(pymysql.connections.Connection):  # type: ignore[misc]
    """A PyMySQL connection whose every socket read and write ends by one deadline.

    PyMySQL applies ``_read_timeout``/``_write_timeout`` per socket operation; re-arming them to
    the time left before each packet turns that into a bound on the whole call. Every use of the
    driver's private API is kept inside this class.
    """

    deadline: float = math.inf
    connect_cap: float = DEFAULT_CONNECT_TIMEOUT
    #: Once the handshake is done: wait for a reply's first byte with ``poll``, so that a
    #: deadline passing there leaves the stream whole (a socket timeout inside PyMySQL's
    #: buffered reader would break it for good).
    keeps_late: bool = False
    #: When the statement whose reply is still owed was sent (monotonic), or None.
    owed_since: float | None = None
    _sent_at: float = 0.0
    _awaiting: bool = False
    #: TLS was asked for: a server that does not offer it is refused before any credential is sent.
    tls_required: bool = False

    def __init__(self, *args: Any, tls_contexts: dict[str, ssl.SSLContext], **kwargs: Any) -> None:
        self._tls_contexts = tls_contexts
        super().__init__(*args, **kwargs)

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        """The TLS context for these TLS options, made once per backend instead of per connection.

        PyMySQL makes a context for every connection, even without TLS options (it then tries TLS
        if the server offers it), and loading the system's CA store costs 30-40 ms of CPU: most
        of a reconnect on an idle host, and several hundred ms on a busy one, where a follower's
        whole call has ``renew_deadline``.
        """
        if not isinstance(sslp, dict):
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        key = repr(sorted(sslp.items()))
        context = self._tls_contexts.get(key)
        if context is None:
            context = self._tls_contexts[key] = super()._create_ssl_ctx(sslp)
        return context

    def _request_authentication(self) -> None:
        """Refuse a server that does not offer TLS when TLS is required, before the credentials go.

        PyMySQL before 1.2 then carried on in plain text; a man in the middle only had to clear
        the server's TLS flag.
        """
        if self.tls_required and not self.server_capabilities & CLIENT.SSL:
            raise pymysql.OperationalError(CR.CR_SSL_CONNECTION_ERROR, "the server does not offer TLS")
        super()._request_authentication()

    def _left(self) -> float | None:
        """Seconds until the deadline for a socket timeout (None: no deadline, block)."""
        if self.deadline == math.inf:
            return None
        return max(self.deadline - time.monotonic(), _MIN_SOCKET_TIMEOUT)

    def _execute_command(self, command: int, sql: str | bytes) -> None:
        super()._execute_command(command, sql)
        self._sent_at, self._awaiting = time.monotonic(), True

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        if self._awaiting and self.keeps_late:
            self._await_reply()
        self._awaiting = False
        self._read_timeout = self._left()
        return super()._read_packet(packet_type)

    def _await_reply(self) -> None:
        """Wait for the first byte of a reply until the deadline; raise ``_LateReplyError`` if none came.

        The reply buffer is empty here: every earlier reply was read to its end, and the
        server sends nothing unasked but a farewell before it closes, which shows as readable.
        """
        pending = getattr(self._sock, "pending", None)
        if pending is not None and pending() > 0:
            return  # TLS already holds decrypted bytes the socket's poll cannot see
        left = self._left()
        poller = select.poll()
        poller.register(self._sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(None if left is None else math.ceil(left * 1000)):
            self.owed_since = self._sent_at
            raise _LateReplyError(
                f"no reply within the deadline (sent {time.monotonic() - self._sent_at:.3f} s ago)"
            )

    def _more_results(self) -> bool:
        result: Any = self._result
        return result is not None and bool(result.has_next)

    def settle(self) -> None:
        """Read and throw away the reply an earlier call gave up on, before this call sends anything.

        Raises ``_LateReplyError`` if it has still not begun (it stays owed), or a driver error if the
        connection is lost (nothing of this call was sent, so reconnecting is safe). An error
        reply, such as a duplicate key, still ends that reply and keeps the stream whole.
        """
        if self.owed_since is None:
            return
        self._sent_at, self._awaiting, self._next_seq_id = self.owed_since, True, 1
        try:
            self._read_query_result()
            while self._more_results():
                self.next_result()
        except pymysql.MySQLError:
            if self._sock is None:
                raise
        self._result, self.owed_since = None, None

    def _write_bytes(self, data: bytes) -> None:
        self._write_timeout = self._left()
        super()._write_bytes(data)

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        """Set the charset and our ``sql_mode`` in one statement: one round trip less per connect.

        PyMySQL sends ``SET NAMES`` on every connect and then ``SET sql_mode`` as a second
        statement; a reconnect through a slow network is all round trips, so they share one.
        """
        encoding = charset_by_name(charset).encoding
        names = f"NAMES {charset}" + (f" COLLATE {collation}" if collation else "")
        self._execute_command(COMMAND.COM_QUERY, f"SET {names}, sql_mode = '{SQL_MODE}'")
        self._read_packet()
        self.charset, self.encoding, self.collation = charset, encoding, collation

    def begin_call(self, deadline: float) -> None:
        """Bound everything until the next ``begin_call`` by ``deadline`` (a monotonic time)."""
        self.deadline = deadline
        left = self._left()
        self.connect_timeout = self.connect_cap if left is None else min(left, self.connect_cap)

    def closed_by_server(self) -> bool:
        """True when an idle connection has something to read: only EOF or an error can be there.

        A server that restarted or hit ``wait_timeout`` closes its end; checking first means the
        statement is never sent down a dead connection, so no step has to be retried blindly.
        """
        sock = self._sock
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def discard(self) -> None:
        """Close the socket without a goodbye: after an error the protocol state is unknown."""
        self._force_close()


def _epoch(value: datetime) -> float:
    """A DATETIME the server wrote from ``UTC_TIMESTAMP`` as epoch seconds."""
    return (value - _EPOCH) / _SECOND


def _plain(value: object) -> object:
    """A driver value as ``parse_record`` expects it; anything odd passes through to be refused there."""
    if isinstance(value, datetime):
        return _epoch(value)
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _record(name: str, row: Sequence[object]) -> Result[LockRecord, MalformedRecord]:
    return parse_record(name, {key: _plain(value) for key, value in zip(FIELDS, row, strict=True)})


def _schema_problem(found: Mapping[str, str], table: str, database: str) -> str | None:
    """Why an existing table cannot hold lock records, or None when its columns fit."""
    if not found:
        return (
            f"lock table `{database}`.`{table}` does not exist and this user may not create it; "
            f"grant CREATE, or create it once as: {' '.join(schema(table).split())}"
        )
    missing = [column for column in REQUIRED_COLUMNS if column not in found]
    if missing:
        return (
            f"table `{database}`.`{table}` is not a gomaster lock table: it lacks the columns "
            f"{', '.join(missing)}; use another ?table= or create it as: {' '.join(schema(table).split())}"
        )
    wrong = [
        f"{column} is {found[column]}, expected {' or '.join(kinds)}"
        for column, kinds in REQUIRED_COLUMNS.items()
        if found[column] not in kinds
    ]
    if wrong:
        return f"table `{database}`.`{table}` has columns of the wrong type: {'; '.join(wrong)}"
    return None


class _SetupError(Exception):
    """The server answered, but the database or lock table cannot be used as configured."""


#: OpenSSL's verification results for a certificate that does not name what was connected to.
_NAME_MISMATCHES = frozenset({62, 63, 64})  # X509_V_ERR_HOSTNAME/EMAIL/IP_ADDRESS_MISMATCH


def _refused_certificate(settings: _Settings, error: ssl.SSLCertVerificationError) -> str:
    """Why the server's certificate was refused, in one line that names the option to change."""
    where = settings.where
    detail = str(error.verify_message or error.reason or error).rstrip(".")
    if error.verify_code in _NAME_MISMATCHES:
        return (
            f"TLS host name mismatch on {where}: {detail}; connect by a name the certificate lists, "
            "or set ssl_verify_identity=false to check only that a trusted CA signed it (for a server "
            "reached by IP address)"
        )
    trusted = settings.tls.trusted if settings.tls is not None else "the CA store"
    return (
        f"TLS certificate not trusted: the certificate of {where} is not signed by {trusted} "
        f"({detail}); set ssl_ca to the CA that signed it, or ssl_verify_cert=false to accept any "
        "certificate (encrypted, but an impostor would not be noticed)"
    )


def _error_number(exc: BaseException) -> int | None:
    code = exc.args[0] if isinstance(exc, pymysql.MySQLError) and exc.args else None
    return code if isinstance(code, int) else None


# -- the backend ---------------------------------------------------------------------------

_LIVE: weakref.WeakSet[MySQLBackend] = weakref.WeakSet()


def _forget_after_fork() -> None:
    for backend in list(_LIVE):
        backend._after_fork()


os.register_at_fork(after_in_child=_forget_after_fork)


class MySQLBackend:
    """Lock records in a MySQL/MariaDB table; picklable configuration that connects lazily.

    Build it from a URL with :func:`from_url` (``connect("mysql://...")``) or with keywords, as
    go-master's MySQL options: ``user``, ``password``, ``host``, ``port``, ``database``,
    ``table``, ``create_db``, a base ``dsn`` instead of the parts, ``connect_timeout``,
    ``connect_retries``/``connect_wait`` for the first connect, ``late_reply_wait`` (how long a
    connection is kept for a late reply), the TLS options (``ssl=True``, ``ssl_ca``, ...; paths
    may be ``Path`` objects) and PyMySQL options such as ``charset``. Bad settings raise
    ``ValueError`` here, so a typo fails at start-up, not at the first election. One connection
    per process, used under a lock by one thread at a time.
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
        given = {
            "user": user,
            "password": password,
            "host": host,
            "port": port,
            "database": database,
            "table": table,
            "create_db": create_db,
            "connect_timeout": connect_timeout,
            "connect_retries": connect_retries,
            "connect_wait": connect_wait,
            "late_reply_wait": late_reply_wait,
            **driver_options,
        }
        try:
            base = _parse_dsn(dsn) if dsn is not None else BackendURL(scheme="mysql")
            settings = _settings(base, given)
        except _SettingError as exc:
            raise ValueError(str(exc)) from None
        self._setup(settings)

    @classmethod
    def _of(cls, settings: _Settings) -> MySQLBackend:
        backend = cls.__new__(cls)
        backend._setup(settings)
        return backend

    def _setup(self, settings: _Settings) -> None:
        self._settings = settings
        self._url = settings.redacted_url
        self._conn: _Connection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._connected_once = False
        #: The table was created or checked on some connection of this process. A reconnect
        #: then skips the two setup round trips, which matters most when the network is slow:
        #: through a 100 ms delay they alone would take most of a one-second lease's deadline.
        self._table_ready = False
        #: TLS contexts by their options, reused by every connection (see ``_create_ssl_ctx``).
        self._tls_contexts: dict[str, ssl.SSLContext] = {}
        #: The context that checks what ``settings.tls`` asks for, once made.
        self._verifying: ssl.SSLContext | None = None
        _LIVE.add(self)

    def __getstate__(self) -> _Settings:
        return self._settings

    def __setstate__(self, state: _Settings) -> None:
        self._setup(state)

    def __repr__(self) -> str:
        return f"MySQLBackend({self.url!r})"

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
        """MySQL cannot notify: followers poll."""
        return False

    # -- connection -------------------------------------------------------------------------

    def _forget(self) -> None:
        """In a new process: let go of the parent's connection without closing it under the parent.

        PyMySQL's finaliser only closes this process's copy of the socket, without a goodbye,
        so the parent's session is untouched.
        """
        self._conn = None
        self._pid = os.getpid()
        self._connected_once = False
        self._table_ready = False
        self._tls_contexts = {}
        self._verifying = None

    def _after_fork(self) -> None:
        """In a forked child, where only the forking thread survives: a lock another thread held
        in the parent would stay locked forever, so the child gets a fresh one."""
        self._lock = threading.Lock()
        self._forget()

    def _run(self, step: str, timeout: float, work: Callable[[_Connection], _T]) -> Result[_T, BackendError]:
        """Do ``work`` on this process's connection within ``timeout``; the one place driver errors
        become ``BackendError``. Any failure drops the connection, so the next call reconnects."""
        deadline = time.monotonic() + timeout
        lock = self._lock
        if not lock.acquire(timeout=max(timeout, 0.0) if deadline < math.inf else -1):
            return Failure(timeout_error(self.url, f"{step} (waiting for another thread's call)", timeout))
        try:
            conn = self._connection(deadline)
            return Success(work(conn))
        except _LateReplyError:
            # Only the reply is late; the connection stays for it (see "Late replies" above).
            return Failure(timeout_error(self.url, f"{step} (the server has not answered yet)", timeout))
        except (pymysql.MySQLError, OSError, UnicodeError, _SetupError) as exc:
            self._drop()
            if _error_number(exc) == ER.NO_SUCH_TABLE:
                self._table_ready = False  # dropped behind our back: the next connect makes it again
            return Failure(BackendError(self.url, self._explain(step, exc, timeout, deadline)))
        except BaseException:
            self._drop()
            raise
        finally:
            lock.release()

    def _connection(self, deadline: float) -> _Connection:
        if self._pid != os.getpid():
            self._forget()
        conn = self._conn
        if conn is not None:
            conn.begin_call(deadline)
            conn = self._reusable(conn)
        if conn is None:
            conn = self._open(deadline)
            self._conn, self._connected_once = conn, True
        conn.begin_call(deadline)
        return conn

    def _reusable(self, conn: _Connection) -> _Connection | None:
        """``conn`` ready for a new statement, or None (dropped) when a new connection is needed.

        A reply still owed is read first; one owed for longer than ``late_reply_wait`` is
        given up, with its connection. Raises ``_LateReplyError`` while the owed reply may still come.
        """
        owed = conn.owed_since
        if owed is None:
            lost = conn.closed_by_server()
        elif time.monotonic() - owed > self._settings.late_reply_wait:
            lost = True
        else:
            try:
                conn.settle()
                lost = False
            except _LateReplyError:
                raise
            except (pymysql.MySQLError, OSError):
                lost = True
        if lost:
            self._drop()
            return None
        return conn

    def _open(self, deadline: float) -> _Connection:
        """Connect, retrying refused connections ``connect_retries`` times on the first connect only."""
        settings = self._settings
        retries = 0 if self._connected_once else settings.connect_retries
        while True:
            try:
                return self._open_once(deadline)
            except pymysql.OperationalError as exc:
                transient = _error_number(exc) in (CR.CR_CONN_HOST_ERROR, ER.CON_COUNT_ERROR)
                if not transient or retries <= 0 or time.monotonic() + settings.connect_wait >= deadline:
                    raise
                retries -= 1
                time.sleep(settings.connect_wait)

    def _verifying_context(self, tls: _TLS) -> ssl.SSLContext:
        """The context for ``tls``, made on first use and then reused, as ``_create_ssl_ctx`` does
        for PyMySQL's own; a file that cannot be loaded is a ``_SetupError`` naming the options."""
        if self._verifying is None:
            try:
                self._verifying = tls.context()
            except (OSError, ValueError) as exc:
                files = ", ".join(
                    f"{key}={path}"
                    for key, path in (("ssl_ca", tls.ca), ("ssl_cert", tls.cert), ("ssl_key", tls.key))
                    if path
                )
                hint = "; check the files and ssl_key_password" if tls.cert else "; check the file"
                raise _SetupError(f"cannot load the TLS files ({files}): {exc}{hint}") from None
        return self._verifying

    def _new_connection(self, deadline: float, database: str | None) -> _Connection:
        settings = self._settings
        options: dict[str, object] = {"charset": "utf8mb4"}
        options.update((key, value) for key, value in settings.options if key not in TLS_OPTIONS)
        if settings.tls is not None:
            options["ssl"] = self._verifying_context(settings.tls)
        elif settings.tls_off:
            options["ssl_disabled"] = True
        conn = _Connection(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password or "",
            database=database,
            client_flag=_CLIENT_FLAGS,
            autocommit=True,
            connect_timeout=settings.connect_timeout,
            defer_connect=True,
            tls_contexts=self._tls_contexts,
            **options,
        )
        conn.connect_cap = settings.connect_timeout
        conn.tls_required = settings.tls is not None
        conn.begin_call(deadline)
        conn.connect()
        conn.keeps_late = True
        return conn

    def _open_once(self, deadline: float) -> _Connection:
        settings = self._settings
        try:
            conn = self._new_connection(deadline, settings.database)
        except pymysql.OperationalError as exc:
            if _error_number(exc) != ER.BAD_DB_ERROR:
                raise
            if not settings.create_db:
                raise _SetupError(
                    f"database {settings.database!r} does not exist on {settings.where}; "
                    "add ?create_db=true (create_db=True) or create it"
                ) from None
            conn = self._new_connection(deadline, None)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{settings.database}`")
                conn.select_db(settings.database)
            except BaseException:
                conn.discard()
                raise
        if self._table_ready:
            return conn
        try:
            self._prepare_table(conn)
        except BaseException:
            conn.discard()
            raise
        self._table_ready = True
        return conn

    def _prepare_table(self, conn: _Connection) -> None:
        """Create the table if absent, then check its columns.

        A user without CREATE privilege is fine as long as the table exists, so a denied CREATE
        is tolerated and the column check decides.
        """
        table = self._settings.table
        with conn.cursor() as cursor:
            try:
                cursor.execute(schema(table))
            except pymysql.MySQLError as exc:
                if _error_number(exc) != ER.TABLEACCESS_DENIED_ERROR:
                    raise
            cursor.execute(
                "SELECT LOWER(column_name), LOWER(data_type) FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            found = {str(column): str(kind) for column, kind in cursor.fetchall()}
        problem = _schema_problem(found, table, self._settings.database)
        if problem is not None:
            raise _SetupError(problem)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.discard()
        self._conn = None

    def _explain(self, step: str, exc: BaseException, timeout: float, deadline: float) -> str:
        """What went wrong, naming the server and the cause, and never the password."""
        settings = self._settings
        where = settings.where
        code = _error_number(exc)
        cause = exc.args[1] if isinstance(exc, pymysql.MySQLError) and len(exc.args) > 1 else exc
        original = getattr(exc, "original_exception", None) or exc.__context__
        if isinstance(exc, _SetupError):
            message = str(exc)
        elif isinstance(original, socket.gaierror):
            message = f"cannot resolve host {settings.host!r} ({original}); check the host name"
        elif isinstance(original, ssl.SSLCertVerificationError):
            message = _refused_certificate(settings, original)
        elif isinstance(original, ssl.SSLError):
            message = f"TLS with {where} failed: {original}"
        elif code == CR.CR_SSL_CONNECTION_ERROR:
            message = (
                f"{where} does not offer TLS, which the ssl options ask for; turn TLS on at the server "
                "(or remove the ssl options to connect without it)"
            )
        elif (
            isinstance(exc, TimeoutError)
            or isinstance(original, TimeoutError)
            or time.monotonic() >= deadline
        ):
            message = (
                f"{timeout_error(self.url, step, timeout).message} on {where}; the connection was dropped"
            )
        elif code == ER.ACCESS_DENIED_ERROR:
            message = f"access denied on {where}: check the user name and password ({cause})"
        elif code == ER.DBACCESS_DENIED_ERROR:
            message = f"access denied on {where}: grant this user database {settings.database!r} ({cause})"
        elif code == ER.TABLEACCESS_DENIED_ERROR:
            message = (
                f"{step} denied on {where}: the user needs SELECT, INSERT and UPDATE on "
                f"`{settings.database}`.`{settings.table}` ({cause})"
            )
        elif code == CR.CR_CONN_HOST_ERROR:
            message = f"cannot connect to {where}: {cause}"
        elif code in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR):
            message = f"lost the connection to {where} during {step}: {cause}"
        else:
            label = f"{type(exc).__name__} {code}" if code is not None else type(exc).__name__
            message = f"{step} failed on {where}: {label}: {cause}"
        return scrub(message, settings.password, settings.tls.key_password if settings.tls else None)

    # -- the steps --------------------------------------------------------------------------

    def observe(self, name: str, timeout: float) -> IOResult[Observation, BackendError | MalformedRecord]:
        """One SELECT returning the row (if any) and the server's clock at the same moment."""
        sql = (
            f"SELECT n.now, t.name IS NOT NULL, {', '.join('t.' + c for c in FIELDS)} "
            f"FROM (SELECT {NOW} AS now) AS n LEFT JOIN `{self._settings.table}` AS t ON t.name = %s"
        )
        rows = self._run("observe", timeout, lambda conn: _query(conn, sql, (name,)))
        if isinstance(rows, Failure):
            return IOFailure(rows.failure())
        now, found, *fields = rows.unwrap()[0]
        if not isinstance(now, datetime):
            return IOFailure(BackendError(self.url, f"server clock returned {now!r}"))
        server_now = _epoch(now)
        if not found:
            return IOSuccess(Observation(None, server_now))
        return IOResult.from_result(_record(name, fields).map(lambda record: Observation(record, server_now)))

    def claim(self, claim: Claim, timeout: float) -> IOResult[LockRecord, Conflict | BackendError]:
        """INSERT when absent, else UPDATE only the exact expected row once it has expired by server
        time (a graceful release expires it at once; an operator's revoke keeps the expiry)."""
        me = claim.node
        table = self._settings.table
        ttl = round(claim.ttl * _MICROSECONDS)
        if claim.expected is None:
            write = (
                f"INSERT INTO `{table}` (name, {COLUMNS}) VALUES "
                f"(%s, %s, %s, %s, {NOW}, {NOW}, {NOW} + INTERVAL %s MICROSECOND, %s, %s)"
            )
            params: tuple[object, ...] = (
                claim.name,
                me.node_id,
                me.version,
                claim.token,
                ttl,
                me.host,
                me.pid,
            )
        else:
            write = (
                f"UPDATE `{table}` SET holder = %s, version = %s, token = %s, acquired_at = {NOW}, "
                f"renewed_at = {NOW}, expires_at = {NOW} + INTERVAL %s MICROSECOND, host = %s, pid = %s "
                f"WHERE name = %s AND token = %s AND holder = %s AND expires_at <= {NOW}"
            )
            expected = claim.expected
            params = (me.node_id, me.version, claim.token, ttl, me.host, me.pid)
            params += (claim.name, expected.token, expected.holder)
        mine = (claim.name, me.node_id, claim.token)
        return self._write_and_read(
            "claim", claim.name, write, params, mine, timeout, missing=Conflict(claim.name)
        )

    def renew(
        self, record: LockRecord, ttl: float, timeout: float
    ) -> IOResult[LockRecord, Lost | BackendError]:
        """Extend only our own, still-live lease, in one round trip."""
        write = (
            f"UPDATE `{self._settings.table}` SET renewed_at = {NOW}, "
            f"expires_at = {NOW} + INTERVAL %s MICROSECOND "
            f"WHERE name = %s AND holder = %s AND token = %s AND expires_at > {NOW}"
        )
        mine = (record.name, record.holder, record.token)
        params = (round(ttl * _MICROSECONDS), *mine)
        return self._write_and_read("renew", record.name, write, params, mine, timeout, missing=Lost(record))

    def _write_and_read(
        self,
        step: str,
        name: str,
        write: str,
        params: tuple[object, ...],
        mine: tuple[str, str, int],
        timeout: float,
        *,
        missing: _Refusal,
    ) -> IOResult[LockRecord, _Refusal | BackendError]:
        """The write and the read-back of our row as one multi-statement query (see the module doc)."""
        read = (
            f"SELECT {COLUMNS} FROM `{self._settings.table}` WHERE name = %s AND holder = %s AND token = %s"
        )
        sql = f"{write}; {read}"
        rows = self._run(step, timeout, lambda conn: _write_then_select(conn, sql, (*params, *mine)))
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
        """Mark the lease released if it is still exactly this holder's; the token stays."""
        sql = (
            f"UPDATE `{self._settings.table}` SET holder = '', expires_at = LEAST(expires_at, {NOW}) "
            "WHERE name = %s AND holder = %s AND token = %s AND holder <> ''"
        )
        params = (record.name, record.holder, record.token)
        changed = self._run("release", timeout, lambda conn: _execute(conn, sql, params))
        return IOResult.from_result(changed).map(lambda count: count == 1)

    def revoke(self, record: LockRecord, timeout: float) -> IOResult[bool, BackendError]:
        """The operator's release: clear the holder if it is still ``record``'s, keeping token and
        expiry, so nobody claims before the holder's own deadline has stopped its work."""
        sql = (
            f"UPDATE `{self._settings.table}` SET holder = '' "
            "WHERE name = %s AND holder = %s AND token = %s AND holder <> ''"
        )
        params = (record.name, record.holder, record.token)
        changed = self._run("revoke", timeout, lambda conn: _execute(conn, sql, params))
        return IOResult.from_result(changed).map(lambda count: count == 1)

    def repair(
        self, name: str, hold: float, token_floor: int, timeout: float
    ) -> IOResult[int | None, BackendError]:
        """Rewrite the row as released until ``hold`` from now (see ``LockBackend.repair``), and
        read its token back, in one round trip. ``token`` is assigned first, from the old value."""
        table = self._settings.table
        sql = (
            f"UPDATE `{table}` SET token = GREATEST(%s, IF(token >= 0 AND token < {MAX_TOKEN}, token, "
            "UNIX_TIMESTAMP() * 1000)), holder = '', version = '', host = '', pid = 0, "
            f"acquired_at = {NOW}, renewed_at = {NOW}, expires_at = {NOW} + INTERVAL %s MICROSECOND "
            f"WHERE name = %s; SELECT token FROM `{table}` WHERE name = %s"
        )
        params = (token_floor, round(hold * _MICROSECONDS), name, name)
        rows = self._run("repair", timeout, lambda conn: _write_then_select(conn, sql, params))
        return IOResult.from_result(rows).map(lambda found: int(str(found[0][0])) if found else None)

    def wait_for_release(self, name: str, timeout: float) -> IOResult[bool, BackendError]:
        """MySQL has no notifications: report at once that none came, and let the elector poll."""
        return IOSuccess(False)

    def names(self, timeout: float) -> IOResult[list[str], BackendError]:
        """Every lock name in the table."""
        sql = f"SELECT name FROM `{self._settings.table}` ORDER BY name"
        rows = self._run("names", timeout, lambda conn: _query(conn, sql, ()))
        return IOResult.from_result(rows).map(lambda found: [_name(row[0]) for row in found])

    def close(self) -> None:
        """Say goodbye on this process's connection; the object reconnects if used again."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.begin_call(time.monotonic() + _CLOSE_TIMEOUT)
                with contextlib.suppress(pymysql.MySQLError, OSError):
                    conn.close()


def _query(conn: _Connection, sql: str, params: tuple[object, ...]) -> list[_Row]:
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _execute(conn: _Connection, sql: str, params: tuple[object, ...]) -> int:
    with conn.cursor() as cursor:
        count: int = cursor.execute(sql, params)
        return count


def _write_then_select(conn: _Connection, sql: str, params: tuple[object, ...]) -> list[_Row]:
    """Rows of the read-back when the write matched exactly one row, else none.

    A duplicate key on the INSERT of a first claim is the expected losing answer, not an error:
    the server stopped at it, so the connection is still in a clean state and is kept.
    """
    with conn.cursor() as cursor:
        try:
            matched = cursor.execute(sql, params)
        except pymysql.IntegrityError as exc:
            if _error_number(exc) == ER.DUP_ENTRY:
                return []
            raise
        cursor.nextset()
        rows = list(cursor.fetchall())
    return rows if matched == 1 else []


def _name(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return str(value)


def from_url(url: BackendURL) -> Result[MySQLBackend, str]:
    """``mysql://user:pass@host:3306/db?table=gomaster_lock&create_db=true`` (or ``mariadb://``).

    ``table``, ``create_db``, ``connect_timeout``, ``connect_retries``, ``connect_wait`` and
    ``late_reply_wait`` are gomaster's; the TLS options (``ssl``, ``ssl_ca``, ...) are read here
    and verify by default (see the module doc); other parameters (``charset``, ...) go to
    PyMySQL. Nothing connects yet. The message of a ``Failure`` says what to change and never
    contains the password.
    """
    if url.scheme not in _SCHEMES:
        return Failure(f"not a MySQL URL: {url.redacted}")
    try:
        return Success(MySQLBackend._of(_settings(url, {})))
    except _SettingError as exc:
        return Failure(f"{exc} (in {url.redacted})")
