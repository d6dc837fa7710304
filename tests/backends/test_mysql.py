"""What only the MySQL/MariaDB backend has to prove, on real servers: clock, config, faults, rights."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pymysql
import pytest
from returns.result import Failure

from gomaster.backends import LockBackend, connect
from gomaster.backends.mysql import MySQLBackend
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from tests.backends.traits import mysql_admin
from tests.backends.traits import parts as parsed_url
from tests.chaos.proxy import BLACKHOLE, PASS, ProxyHub
from tests.helpers import err, free_port, identity, ok
from tests.servers.mysql import MariaDBServer

pytestmark = pytest.mark.mysql

TIMEOUT = 5.0
TTL = 30.0
SHORT_TIMEOUT = 1.0
#: How far past its timeout a call against an unresponsive server may return.
TIMEOUT_SLACK = 0.5
SECRET = "Sup3r-Secret-Pw"


def _url(
    base: str,
    *,
    database: str | None = None,
    user: str | None = None,
    password: str | None = None,
    **query: str,
) -> str:
    """``base`` with another database, credentials or query parameters (added to the base's)."""
    parts = parsed_url(base)
    user = parts.username if user is None else user
    password = parts.password if password is None else password
    auth = f"{user}{':' + password if password else ''}@" if user else ""
    merged = {**dict(parts.query), **query}
    tail = f"?{urlencode(merged)}" if merged else ""
    db = parts.path.removeprefix("/") if database is None else database
    return f"mysql://{auth}{parts.host}:{parts.port or 3306}/{db}{tail}"


def _database(url: str) -> str:
    return parsed_url(url).path.removeprefix("/")


@pytest.fixture
def admin(mysql_url: str) -> Iterator[Any]:
    """A root connection to the shared server, in the test database."""
    ok(connect(mysql_url).observe("warm-up", TIMEOUT))  # creates the database if needed
    conn = mysql_admin(mysql_url, _database(mysql_url))
    yield conn
    conn.close()


@pytest.fixture
def table() -> str:
    """A lock table of this test's own."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spare_database(mysql_url: str) -> Iterator[str]:
    """A database name that does not exist yet, dropped again afterwards."""
    name = f"gm_{uuid.uuid4().hex[:12]}"
    yield name
    conn = mysql_admin(mysql_url)
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def _acquire(backend: LockBackend, name: str, ttl: float = TTL) -> LockRecord:
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, identity(), Timing.from_ttl(ttl))
    assert not isinstance(planned, Failure), planned
    return ok(backend.claim(planned.unwrap(), TIMEOUT))


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def _execute(conn: Any, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


# -- the clock ------------------------------------------------------------------------------


def test_server_clock_is_utc_whatever_the_session_time_zone(mysql_url: str, admin: Any, table: str) -> None:
    _execute(admin, "SET GLOBAL time_zone = '+05:00'")
    try:
        other = mysql_admin(mysql_url)
        offset = _execute(other, "SELECT TIMESTAMPDIFF(HOUR, UTC_TIMESTAMP(), NOW())")[0][0]
        other.close()
        assert offset == 5, "the global time zone did not reach new sessions; the test proves nothing"
        backend = connect(_url(mysql_url, table=table))
        seen = ok(backend.observe("clock", TIMEOUT))
        assert abs(seen.server_now - time.time()) < 1.0
        record = _acquire(backend, "clock")
        assert abs(record.acquired_at - time.time()) < 1.0
        assert ok(backend.observe("clock", TIMEOUT)).record == record
        backend.close()
    finally:
        _execute(admin, "SET GLOBAL time_zone = SYSTEM")


# -- configuration --------------------------------------------------------------------------


def test_a_url_dsn_and_a_go_dsn_reach_the_same_server(mysql_url: str, table: str) -> None:
    """Keyword arguments are in the contract suite; the ``dsn`` forms are MySQL's own."""
    parts = parsed_url(mysql_url)
    by_url = connect(_url(mysql_url, table=table))
    record = _acquire(by_url, "shared")
    by_dsn = MySQLBackend(dsn=_url(mysql_url), table=table)
    go_auth = f"{parts.username}{':' + parts.password if parts.password else ''}"
    go_dsn = f"{go_auth}@tcp({parts.host}:{parts.port})/{_database(mysql_url)}?parseTime=true&timeout=3s"
    by_go_dsn = MySQLBackend(dsn=go_dsn, table=table)
    for backend in (by_dsn, by_go_dsn):
        assert ok(backend.observe("shared", TIMEOUT)).record == record, backend
        backend.close()
    assert "connect_timeout=3.0" in by_go_dsn.url
    by_url.close()


def test_create_db_creates_a_missing_database(mysql_url: str, spare_database: str) -> None:
    backend = connect(_url(mysql_url, database=spare_database, create_db="true"))
    record = _acquire(backend, "fresh")
    assert record.token == 1
    backend.close()
    conn = mysql_admin(mysql_url)
    assert _execute(conn, "SHOW DATABASES LIKE %s", (spare_database,)) == [(spare_database,)]
    conn.close()


def test_a_missing_database_without_create_db_says_how_to_fix_it(mysql_url: str, spare_database: str) -> None:
    backend = connect(_url(mysql_url, database=spare_database, create_db="false"))
    error = err(backend.observe("x", TIMEOUT))
    assert isinstance(error, BackendError)
    assert spare_database in error.message
    assert "create_db=true" in error.message
    assert "or create it" in error.message


def test_mariadb_scheme_and_driver_options_are_accepted(mysql_url: str, table: str) -> None:
    parts = parsed_url(mysql_url)
    url = _url(mysql_url, table=table, charset="utf8mb4", program_name="gomaster-test")
    backend = connect(url.replace("mysql://", "mariadb://", 1))
    assert backend.url.startswith("mariadb://")
    assert ok(backend.observe("x", TIMEOUT)).record is None
    assert f"{parts.host}:{parts.port}" in backend.url
    backend.close()


# -- secrets --------------------------------------------------------------------------------


# -- unreachable, frozen and restarted servers ----------------------------------------------


def test_connect_retries_stay_within_the_deadline() -> None:
    backend = MySQLBackend(host="127.0.0.1", port=free_port(), connect_retries=2, connect_wait=0.2)
    elapsed = _timed(lambda: err(backend.observe("x", TIMEOUT)))
    assert 0.4 <= elapsed < 1.0, "two retries 0.2 s apart"
    patient = MySQLBackend(host="127.0.0.1", port=free_port(), connect_retries=100, connect_wait=0.2)
    assert _timed(lambda: err(patient.observe("x", 0.5))) < 0.5 + TIMEOUT_SLACK


def _sent_commands(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every command sent from now on, on any PyMySQL connection of this process."""
    sent: list[int] = []
    original = pymysql.connections.Connection._execute_command

    def counting(conn: Any, command: int, sql: Any) -> Any:
        sent.append(command)
        return original(conn, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counting)
    return sent


@pytest.mark.parametrize("late_step", ["renewal", "losing first claim"])
def test_a_reply_late_because_the_server_froze_is_read_and_dropped_on_the_same_connection(
    private_mariadb: MariaDBServer, monkeypatch: pytest.MonkeyPatch, late_step: str
) -> None:
    backend = connect(private_mariadb.url(create_db="true"))
    record = _acquire(backend, "late")
    thread = backend._conn.thread_id()  # type: ignore[attr-defined]
    sent = _sent_commands(monkeypatch)
    private_mariadb.freeze()
    try:
        if late_step == "renewal":  # two statements: an OK and a result set are owed
            err(backend.renew(record, TTL, SHORT_TIMEOUT / 2))
        else:  # the INSERT of a first claim: a duplicate-key error reply is owed
            err(backend.claim(Claim.first("late", identity(), TTL), SHORT_TIMEOUT / 2))
        assert len(sent) == 1
        # The next call waits for that reply again instead of sending anything or reconnecting.
        elapsed = _timed(lambda: err(backend.observe("late", SHORT_TIMEOUT / 2)))
        assert elapsed < SHORT_TIMEOUT / 2 + TIMEOUT_SLACK
        assert len(sent) == 1
    finally:
        private_mariadb.thaw()
    seen = ok(backend.observe("late", TIMEOUT)).record
    assert backend._conn.thread_id() == thread  # type: ignore[attr-defined]
    assert len(sent) == 2, "only this observe was sent after the thaw"
    assert seen is not None and (seen.holder, seen.token) == (record.holder, record.token)
    if late_step == "renewal":  # the server ran the late renewal once it thawed
        assert seen.expires_at > record.expires_at
    else:
        assert seen == record
    renewed = ok(backend.renew(record, TTL, TIMEOUT))  # and the stream is in step for what follows
    assert renewed.token == record.token
    backend.close()


def test_a_reply_that_does_not_come_within_late_reply_wait_is_given_up_with_its_connection(
    private_mariadb: MariaDBServer,
) -> None:
    backend = connect(private_mariadb.url(create_db="true", late_reply_wait="0.5"))
    ok(backend.observe("patience", TIMEOUT))
    thread = backend._conn.thread_id()  # type: ignore[attr-defined]
    private_mariadb.freeze()
    try:
        err(backend.observe("patience", 0.2))
        time.sleep(0.4)
        # Past the wait: the old connection goes, and the new one's handshake meets the freeze.
        elapsed = _timed(lambda: err(backend.observe("patience", 0.3)))
        assert elapsed < 0.3 + TIMEOUT_SLACK
    finally:
        private_mariadb.thaw()
    assert ok(backend.observe("patience", TIMEOUT)).record is None
    assert backend._conn.thread_id() != thread  # type: ignore[attr-defined]
    backend.close()


def test_a_connection_lost_while_its_reply_is_owed_is_replaced_within_the_next_call(
    mysql_url: str, table: str
) -> None:
    parts = parsed_url(mysql_url)
    with ProxyHub() as hub:
        proxy = hub.add(parts.port or 3306, parts.host or "127.0.0.1")
        backend = connect(_url(mysql_url, table=table).replace(f":{parts.port or 3306}/", f":{proxy.port}/"))
        record = _acquire(backend, "owed")
        proxy.set(BLACKHOLE)
        err(backend.observe("owed", 0.3))
        proxy.set(PASS)  # the proxy resets the link whose bytes it swallowed
        assert ok(backend.observe("owed", TIMEOUT)).record == record
        backend.close()


# -- what is in the table -------------------------------------------------------------------


def test_a_user_without_create_rights_works_on_an_existing_table(
    mysql_url: str, admin: Any, table: str
) -> None:
    ok(connect(_url(mysql_url, table=table)).names(TIMEOUT))  # root creates the table
    database = _database(mysql_url)
    user = f"gm_dml_{uuid.uuid4().hex[:8]}"
    _execute(admin, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'dml-only'")
    try:
        _execute(admin, f"GRANT SELECT, INSERT, UPDATE ON `{database}`.`{table}` TO '{user}'@'%'")
        limited = connect(_url(mysql_url, user=user, password="dml-only", table=table))
        record = _acquire(limited, "rights")
        renewed = ok(limited.renew(record, TTL, TIMEOUT))
        assert ok(limited.release(renewed, TIMEOUT)) is True
        assert _acquire(limited, "rights").token == record.token + 1
        limited.close()
        missing = connect(_url(mysql_url, user=user, password="dml-only", table=table + "_absent"))
        error = err(missing.observe("x", TIMEOUT))
        assert isinstance(error, BackendError)
        assert "does not exist and this user may not create it" in error.message
        assert "CREATE TABLE" in error.message
    finally:
        _execute(admin, f"DROP USER '{user}'@'%'")


# -- connections ----------------------------------------------------------------------------


def test_a_reconnect_skips_the_table_setup_but_a_dropped_table_is_made_again(
    mysql_url: str, admin: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = connect(_url(mysql_url, table=table))
    record = _acquire(backend, "again")
    sent: list[bytes] = []
    original = pymysql.connections.Connection._execute_command

    def counting(conn: Any, command: int, sql: Any) -> Any:
        sent.append(sql if isinstance(sql, bytes) else str(sql).encode())
        return original(conn, command, sql)

    monkeypatch.setattr(pymysql.connections.Connection, "_execute_command", counting)
    _execute(admin, f"KILL {backend._conn.thread_id()}")  # type: ignore[attr-defined]
    sent.clear()
    assert ok(backend.observe("again", TIMEOUT)).record == record
    assert not [q for q in sent if b"CREATE" in q or b"information_schema" in q], sent
    assert len(sent) == 2, sent  # charset and sql_mode in one statement, then the step
    _execute(admin, f"DROP TABLE `{table}`")
    err(backend.observe("again", TIMEOUT))  # the table is gone: this call says so
    assert ok(backend.observe("again", TIMEOUT)).record is None  # and the next one made it again
    backend.close()


def test_reconnects_reuse_the_tls_context_instead_of_loading_the_ca_store_again(
    mysql_url: str, admin: Any, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    backend = connect(_url(mysql_url, table=table))
    record = _acquire(backend, "tls")
    for _ in range(3):
        _execute(admin, f"KILL {backend._conn.thread_id()}")  # type: ignore[attr-defined]
        assert ok(backend.observe("tls", TIMEOUT)).record == record
    # PyMySQL builds one per connection (30-40 ms of CPU each); one backend needs one in all.
    assert len(made) == 1, made
    backend.close()
