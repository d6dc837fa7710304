"""What only the PostgreSQL backend has to prove, on real servers: clock, notices, config, faults, rights.

Every test talks to a real server (the session's ``postgresql_url``, or a private one that it
freezes or restarts); nothing is mocked.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql

from gomaster.backends import LockBackend, connect
from gomaster.backends.postgresql import PostgreSQLBackend, channel_for
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError
from gomaster.core.record import MAX_NAME_LENGTH, LockRecord
from gomaster.core.timing import Timing
from tests.backends.traits import TRAITS, postgresql_admin
from tests.backends.traits import parts as parsed_url
from tests.helpers import err, identity, ok, waiter

pytestmark = pytest.mark.postgresql

TIMEOUT = 5.0
TTL = 30.0
SHORT_TIMEOUT = 0.5
#: How far past its timeout a call against an unresponsive server may return.
TIMEOUT_SLACK = 0.5
#: How soon after a release returns a waiter on another backend must have woken.
NOTIFY_LATENCY = 0.1
SECRET = "Sup3r-Secret:Pw/@"
#: Long enough for a first ``wait_for_release`` to connect its listener and LISTEN.
LISTEN_SETUP = 0.2


def _url(base: str, *, user: str | None = None, password: str | None = None, **query: str) -> str:
    """``base`` with other credentials or more query parameters."""
    parts = parsed_url(base)
    user = parts.username if user is None else user
    password = parts.password if password is None else password
    auth = f"{quote(user, safe='')}{':' + quote(password, safe='') if password else ''}@" if user else ""
    merged = {**dict(parts.query), **query}
    tail = f"?{urlencode(merged, quote_via=quote)}" if merged else ""
    return f"postgresql://{auth}{parts.host}:{parts.port or 5432}{parts.path}{tail}"


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def _waited(backend: LockBackend, name: str, timeout: float) -> tuple[bool, float]:
    """What ``wait_for_release`` answered, and how long it took."""
    started = time.monotonic()
    woken = ok(backend.wait_for_release(name, timeout))
    return woken, time.monotonic() - started


def _acquire(backend: LockBackend, name: str, ttl: float = TTL) -> LockRecord:
    seen = ok(backend.observe(name, TIMEOUT))
    claim = plan_acquire(seen, name, identity(), Timing()).unwrap()
    return ok(backend.claim(replace(claim, ttl=ttl), TIMEOUT))


@pytest.fixture
def admin(postgresql_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    conn = postgresql_admin(postgresql_url)
    yield conn
    conn.close()


@pytest.fixture
def table(admin: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    """A lock table of the test's own, dropped afterwards."""
    name = f"lock_{uuid.uuid4().hex[:10]}"
    yield name
    admin.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
def backend(postgresql_url: str, table: str) -> Iterator[PostgreSQLBackend]:
    made = connect(_url(postgresql_url, table=table))
    assert isinstance(made, PostgreSQLBackend)
    yield made
    made.close()


@pytest.fixture
def role(admin: psycopg.Connection[tuple[Any, ...]]) -> Iterator[str]:
    """A login role with password ``SECRET`` and no rights yet."""
    name = f"gm_{uuid.uuid4().hex[:8]}"
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(SECRET))
    )
    yield name
    admin.execute(f"DROP OWNED BY {name}")
    admin.execute(f"DROP ROLE {name}")


# -- storage and clock ----------------------------------------------------------------------


def test_times_are_timestamptz_of_the_server_clock(
    backend: PostgreSQLBackend, admin: psycopg.Connection[tuple[Any, ...]], table: str
) -> None:
    before = time.time()
    seen = ok(backend.observe("clock", TIMEOUT))
    assert abs(seen.server_now - before) < 1.0, "one machine: the server's clock agrees with ours"
    record = _acquire(backend, "clock")
    types = dict(
        admin.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    )
    assert types["expires_at"] == "timestamp with time zone"
    assert types["token"] == "bigint"
    assert types["name"] == "text"
    stored = admin.execute(
        "SELECT extract(epoch FROM acquired_at)::float8, "
        f'extract(epoch FROM expires_at - acquired_at)::float8 FROM "{table}"'
    ).fetchone()
    assert stored == (pytest.approx(record.acquired_at, abs=1e-6), pytest.approx(TTL, abs=1e-6))
    assert record.acquired_at == record.renewed_at, "one clock reading per statement"


def test_a_session_time_zone_does_not_move_the_times(postgresql_url: str, table: str) -> None:
    utc = connect(_url(postgresql_url, table=table))
    far = connect(_url(postgresql_url, table=table, options="-c TimeZone=Pacific/Kiritimati"))
    record = _acquire(far, "zone")
    assert ok(utc.observe("zone", TIMEOUT)).record == record
    assert abs(ok(far.observe("zone", TIMEOUT)).server_now - time.time()) < 1.0
    utc.close()
    far.close()


# -- one round trip per step ----------------------------------------------------------------


# -- release notices ------------------------------------------------------------------------


def _listen(backend: LockBackend, name: str) -> None:
    """Have ``backend`` connect its listener and LISTEN for ``name`` (nothing is released)."""
    assert ok(backend.wait_for_release(name, LISTEN_SETUP)) is False


def _listening(backend: PostgreSQLBackend, admin: psycopg.Connection[tuple[Any, ...]], name: str) -> None:
    """Wait until the server has a session listening on ``name``'s channel."""
    deadline = time.monotonic() + TIMEOUT
    channel = backend.channel(name)
    while time.monotonic() < deadline:
        listening = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (f'LISTEN "{channel}"',)
        ).fetchone()
        if listening and listening[0]:
            return
        time.sleep(0.005)
    raise AssertionError(f"nobody LISTENs on {channel}")


@pytest.mark.parametrize(
    "name",
    [
        'it\'s "quoted"; DROP TABLE x; --',
        "spaces  and\ttabs are not control? no: only spaces here",
        "ünïcødé ☃ 日本語 🚀",
        "é" * MAX_NAME_LENGTH,
        "🚀" * MAX_NAME_LENGTH,
    ],
    ids=["quotes", "spaces", "unicode", "200-two-byte", "200-four-byte"],
)
def test_any_lock_name_gets_a_valid_channel_that_works(backend: PostgreSQLBackend, name: str) -> None:
    name = name.replace("\t", " ")
    channel = backend.channel(name)
    assert re.fullmatch(r"gomaster_[0-9a-f]{48}", channel), channel
    assert len(channel.encode()) <= 63
    record = _acquire(backend, name)
    _listen(backend, name)
    ok(backend.release(record, TIMEOUT))
    assert ok(backend.wait_for_release(name, TIMEOUT)) is True


def test_channels_differ_by_name_and_by_table() -> None:
    assert channel_for("locks", "a") != channel_for("locks", "b")
    assert channel_for("locks", "a") != channel_for("other", "a")
    assert channel_for("locks", "a") == channel_for("locks", "a")


def test_a_waiting_listener_never_delays_the_steps(backend: PostgreSQLBackend) -> None:
    record = _acquire(backend, "busy")
    thread, outcome = waiter(backend, "busy", 1.0)
    time.sleep(0.1)
    assert _timed(lambda: ok(backend.renew(record, TTL, TIMEOUT))) < 0.2
    # A second waiter on the same object while the first waits: no notice came for it.
    woken, elapsed = _waited(backend, "busy", 0.2)
    assert woken is False
    assert elapsed < 0.2 + TIMEOUT_SLACK
    thread.join(5)
    assert outcome[0] is False


# -- configuration --------------------------------------------------------------------------


def test_a_url_dsn_and_a_libpq_dsn_reach_the_same_server(postgresql_url: str, table: str) -> None:
    """Keyword arguments are in the contract suite; the ``dsn`` forms are PostgreSQL's own."""
    parts = parsed_url(postgresql_url)
    by_url = connect(_url(postgresql_url, table=table))
    record = _acquire(by_url, "shared")
    database = parts.path.removeprefix("/")
    by_dsn = PostgreSQLBackend(dsn=_url(postgresql_url), table=table)
    libpq = f"host={parts.host} port={parts.port} user={parts.username} dbname={database}"
    by_libpq = PostgreSQLBackend(dsn=libpq, table=table, connect_timeout=3)
    for backend in (by_dsn, by_libpq):
        assert ok(backend.observe("shared", TIMEOUT)).record == record, backend
        backend.close()
    assert "connect_timeout=3.0" in by_libpq.url
    by_url.close()


def test_postgres_scheme_and_libpq_options_are_accepted(
    postgresql_url: str, table: str, admin: psycopg.Connection[tuple[Any, ...]]
) -> None:
    url = _url(postgresql_url, table=table, sslmode="disable", application_name="gm-test")
    backend = connect(url.replace("postgresql://", "postgres://", 1))
    assert backend.url.startswith("postgres://")
    assert "sslmode=disable" in backend.url
    assert ok(backend.observe("x", TIMEOUT)).record is None
    named = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gm-test'"
    ).fetchone()
    assert named == (1,)
    backend.close()


def test_host_lists_and_socket_directories_are_understood() -> None:
    listed = connect(
        f"postgresql://gm:{quote(SECRET, safe='')}@db1:5432,db2:5433/locks?target_session_attrs=read-write"
    )
    assert listed.url == "postgresql://gm:***@db1:5432,db2:5433/locks?target_session_attrs=read-write"
    local = connect("postgres:///locks?host=/run/postgresql&port=5433")
    assert local.url == "postgres://%2Frun%2Fpostgresql:5433/locks"
    by_libpq = PostgreSQLBackend(
        dsn=f"host=db1 port=6543 dbname=locks user=gm password='{SECRET}' sslmode=require"
    )
    assert by_libpq.url == "postgresql://gm:***@db1:6543/locks?sslmode=require"


# -- secrets and rights ---------------------------------------------------------------------


def test_a_user_with_only_select_insert_update_works_on_an_existing_table(
    postgresql_url: str, admin: psycopg.Connection[tuple[Any, ...]], role: str, table: str
) -> None:
    ok(connect(_url(postgresql_url, table=table)).names(TIMEOUT))  # the admin creates the table
    admin.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
    admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{table}" TO {role}')
    limited = PostgreSQLBackend(dsn=_url(postgresql_url, user=role), password=SECRET, table=table)
    record = _acquire(limited, "rights")
    renewed = ok(limited.renew(record, TTL, TIMEOUT))
    assert ok(limited.release(renewed, TIMEOUT)) is True
    assert _acquire(limited, "rights").token == record.token + 1
    assert ok(limited.names(TIMEOUT)) == ["rights"]
    limited.close()
    missing = PostgreSQLBackend(dsn=_url(postgresql_url, user=role), password=SECRET, table=table + "_absent")
    error = err(missing.observe("x", TIMEOUT))
    assert isinstance(error, BackendError)
    assert "does not exist" in error.message
    assert "may not create it" in error.message
    assert "CREATE TABLE" in error.message
    readonly = f"{table}_ro"
    ok(connect(_url(postgresql_url, table=readonly)).names(TIMEOUT))
    admin.execute(f'GRANT SELECT ON "{readonly}" TO {role}')
    denied = PostgreSQLBackend(dsn=_url(postgresql_url, user=role), password=SECRET, table=readonly)
    refused = err(denied.claim(Claim.first("x", identity(), TTL), TIMEOUT))
    assert isinstance(refused, BackendError)
    assert "needs SELECT, INSERT and UPDATE" in refused.message
    admin.execute(f'DROP TABLE "{readonly}"')


def test_a_missing_database_says_so(postgresql_url: str) -> None:
    parts = parsed_url(postgresql_url)
    missing = f"gm_absent_{uuid.uuid4().hex[:6]}"
    backend = connect(_url(postgresql_url).replace(parts.path, f"/{missing}"))
    error = err(backend.observe("x", TIMEOUT))
    assert isinstance(error, BackendError)
    assert f"database {missing!r} does not exist" in error.message
    assert "CREATE DATABASE" in error.message


# -- what is in the table -------------------------------------------------------------------


# -- unreachable, blocked, frozen and restarted servers -------------------------------------


def test_a_statement_blocked_on_a_row_lock_is_abandoned_by_the_server_too(
    backend: PostgreSQLBackend, postgresql_url: str, table: str
) -> None:
    record = _acquire(backend, "blocked")
    blocker = postgresql_admin(postgresql_url)
    blocker.autocommit = False
    blocker.execute(f'SELECT * FROM "{table}" WHERE name = %s FOR UPDATE', ("blocked",))
    try:
        outcome: list[object] = []
        elapsed = _timed(lambda: outcome.append(err(backend.renew(record, TTL, 0.3))))
        assert elapsed < 0.3 + TIMEOUT_SLACK
        assert "did not finish within 0.300 s" in str(outcome[0])
        waiting = blocker.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'gomaster' AND wait_event_type = 'Lock'"
        ).fetchone()
        assert waiting == (0,), "the server gave up the statement when the call did"
    finally:
        blocker.rollback()
        blocker.close()
    assert ok(backend.renew(record, TTL, TIMEOUT)).token == record.token


# -- processes ------------------------------------------------------------------------------


def test_notice_latency_is_milliseconds(postgresql_url: str, backend: PostgreSQLBackend, table: str) -> None:
    """Twenty handovers: the waiter wakes well within ``NOTIFY_LATENCY`` of each release."""
    other = connect(_url(postgresql_url, table=table))
    _listen(other, "latency")
    delays = []
    for _ in range(20):
        record = _acquire(backend, "latency")
        assert ok(other.wait_for_release("latency", 0.001)) is False, "no notice left over"
        thread, outcome = waiter(other, "latency", TIMEOUT)
        time.sleep(0.01)
        ok(backend.release(record, TIMEOUT))
        released = time.monotonic()
        thread.join(TIMEOUT)
        assert outcome[0] is True
        assert isinstance(outcome[1], float)
        delays.append(outcome[1] - released)
    assert statistics.median(delays) < NOTIFY_LATENCY / 2
    other.close()


def test_a_user_who_may_not_alter_an_old_lock_table_is_told_the_statements_that_fix_it(
    postgresql_url: str,
) -> None:
    """The table predates the run ledger and its user has only SELECT, INSERT and UPDATE: the
    error names the ALTER statements, and they work when its owner runs them."""
    traits, tag = TRAITS["postgresql"], f"old_{uuid.uuid4().hex[:8]}"
    with traits.secured(postgresql_url, tag) as (limited, _, _):
        owned = connect(traits.apart(postgresql_url, tag))
        with traits.raw(postgresql_url, owned) as raw:
            traits.drop_ledger(raw, owned)
        error = str(err(connect(limited).observe("job", TIMEOUT)))
        assert "lacks the schedule ledger's columns, which this user may not add; run once: " in error
        statements = error.split("run once: ", 1)[1]
        assert "ADD COLUMN IF NOT EXISTS run_schedule TEXT NOT NULL DEFAULT ''" in statements
        with traits.raw(postgresql_url, owned) as raw:
            for statement in statements.split("; "):
                raw(statement)
        assert ok(connect(limited).observe("job", TIMEOUT)).record is None
        owned.close()
