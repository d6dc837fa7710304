"""What differs between backends, as one table the contract suite reads (``TRAITS``).

Every behaviour the backends share is written once in ``test_contract.py``; what a test needs
that only a backend knows (how to spoil a record behind its back, settings it must refuse, its
keyword arguments, a server that wants a password, a server the test may freeze) comes from that
backend's entry here. A new backend gets the whole contract by adding one entry.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pymysql
import pytest
import redis
from psycopg import sql
from pymongo import MongoClient

from gomaster.backends import LockBackend, connect
from gomaster.backends.mongodb import DEFAULT_COLLECTION, MongoBackend
from gomaster.backends.mysql import MySQLBackend
from gomaster.backends.postgresql import PostgreSQLBackend
from gomaster.backends.redis import RedisBackend
from gomaster.backends.sqlite import DEFAULT_TABLE, SQLiteBackend
from gomaster.backends.url import BackendURL, parse_url
from gomaster.core.record import LEDGER_FIELDS, MAX_TOKEN, SCHEDULE_FIELD
from tests.servers.base import ThrowawayServer
from tests.servers.mongodb import SecantusServer
from tests.servers.mysql import MariaDBServer
from tests.servers.postgresql import PostgreSQLServer, create_database
from tests.servers.redis import PERSISTENT, RedisServer

#: A password (and a key password) that must never show: with characters a URL must encode.
SECRET = "Sup3r-Secret:Pw/@"
KEY_SECRET = "k3y-S3cret"
QUOTED = quote(SECRET, safe="")
#: A year-2999 expiry, in epoch seconds: a row nobody would ever be allowed to claim.
FAR_FUTURE = 32_472_144_000.0

#: ``spoil(raw, backend, name)``: change the stored record of ``name`` behind the backend's back.
Spoil = Callable[[Any, Any, str], object]


@dataclass(frozen=True)
class Corruption:
    """A way to spoil one stored record, and what the MalformedRecord must then name."""

    id: str
    spoil: Spoil
    problem: str


@dataclass(frozen=True)
class Refusal:
    """Settings that cannot work, and words the refusal must contain (case does not matter)."""

    id: str
    given: str | dict[str, Any]
    says: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A lock table made by hand (statements separated by ``; ``, ``{t}`` its name), and what
    the refusal must say; a table whose refusal says nothing is accepted."""

    id: str
    ddl: str
    says: tuple[str, ...] = ()


def parts(url: str) -> BackendURL:
    """``url`` parsed, failing the test if it does not parse."""
    parsed = parse_url(url)
    return parsed.unwrap()


def mysql_admin(url: str, database: str | None = None) -> Any:
    """A PyMySQL connection as the URL's own (administrative) user, outside the backend."""
    found = parts(url)
    return pymysql.connect(
        host=found.host,
        port=found.port or 3306,
        user=found.username,
        password=found.password or "",
        database=database,
        autocommit=True,
    )


def postgresql_admin(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A psycopg connection as the URL's own (administrative) user, outside the backend."""
    found = parts(url)
    return psycopg.connect(
        host=found.host,
        port=found.port or 5432,
        user=found.username,
        password=found.password,
        dbname=found.path.removeprefix("/"),
        autocommit=True,
    )


def _options(url: BackendURL) -> dict[str, Any]:
    """The URL's query parameters, as keyword arguments."""
    return dict(url.query)


def with_query(url: str, **query: str) -> str:
    """``url`` with more query parameters."""
    return url + ("&" if "?" in url else "?") + urlencode(query)


def _sql_statements(statements: str, problem: str, id: str) -> Corruption:
    """A corruption written as SQL: ``{t}`` is the table, statements are separated by ``; ``."""

    def spoil(raw: Callable[[str], None], backend: Any, name: str) -> None:
        for statement in statements.split("; "):
            raw(statement)

    return Corruption(id, spoil, problem)


@dataclass(frozen=True)
class Traits:
    """One backend's entry. The defaults suit a backend without a server (nothing to freeze)."""

    name: str
    #: Whether the backend talks to a server over the network (freeze, restart, round trips).
    network: bool = True
    #: Ways to spoil a stored record (none for a store whose records are typed objects).
    corruptions: tuple[Corruption, ...] = ()
    #: Settings refused before connecting: URLs (``{auth}`` is ``user:password@``) or keywords.
    bad_urls: tuple[Refusal, ...] = ()
    bad_keywords: tuple[Refusal, ...] = ()
    #: A driver option the backend passes on, for URLs and keywords to carry alike.
    driver_option: dict[str, str] = field(default_factory=dict)
    #: Lock tables made by hand, refused before use or accepted (SQL backends).
    tables: tuple[Table, ...] = ()
    #: Whether a lock name that UTF-8 cannot encode (a lone surrogate) is stored as given;
    #: otherwise it is a failure that says so.
    stores_any_name: bool = False
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())

    # -- places and keywords ------------------------------------------------------------------

    def apart(self, url: str, tag: str) -> str:
        """``url`` with a table (prefix, collection) of its own, so a test owns every record."""
        return with_query(url, table=tag)

    def keywords(self, url: str) -> LockBackend:
        """The backend ``url`` names, built from keyword arguments instead."""
        raise NotImplementedError

    def make(self, **keywords: Any) -> LockBackend:
        """The backend class called with ``keywords`` (for the refused ones)."""
        raise NotImplementedError

    def address(self, host: str, port: int) -> str:
        """A URL for ``host:port`` with user alice, password ``SECRET`` and, where the backend
        has one, a secret option set to ``KEY_SECRET``."""
        raise NotImplementedError

    def through(self, url: str, port: int) -> str:
        """``url`` reaching its server through a relay on loopback ``port``."""
        found = parts(url)
        return url.replace(f"{found.host}:{found.port}", f"127.0.0.1:{port}", 1)

    # -- servers ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def private(self) -> Iterator[tuple[ThrowawayServer, str]]:
        """A server of the test's own that keeps its data across a restart, and its URL."""
        raise NotImplementedError
        yield

    @contextlib.contextmanager
    def secured(self, url: str, tag: str) -> Iterator[tuple[str, str, str]]:
        """URLs of a server that wants a password: the right one, a wrong one, and none."""
        raise NotImplementedError
        yield

    # -- records behind the backend's back ----------------------------------------------------

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Any]:
        """What a corruption writes with: an SQL runner, a Redis client, a collection."""
        raise NotImplementedError
        yield

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        """Make the token garbage (and the expiry with it), as a bad hand edit would."""
        raise NotImplementedError

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        """Give the record a valid but absurd expiry: nobody could claim it for centuries."""
        raise NotImplementedError

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        """Make the run ledger's last started tick garbage, as a bad hand edit would."""
        raise NotImplementedError

    def drop_ledger(self, raw: Any, backend: Any) -> None:
        """Take the run ledger's columns out of the lock table, as an earlier gomaster made it."""
        for column in (*LEDGER_FIELDS, SCHEDULE_FIELD):
            raw(f"ALTER TABLE {{t}} DROP COLUMN {column}")

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        """Move the record's expiry a second into the past of the store's own clock."""
        raise NotImplementedError


# -- the in-process stores ---------------------------------------------------------------------


class _Memory(Traits):
    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        store = backend.store
        store.records[name] = replace(store.records[name], holder="", expires_at=FAR_FUTURE)

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        store = backend.store
        store.records[name] = replace(store.records[name], expires_at=store.clock() - 1)

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Any]:
        yield None


class _SQLite(Traits):
    def keywords(self, url: str) -> LockBackend:
        found = parts(url)
        return SQLiteBackend(found.path.removeprefix("/"), **_options(found))

    def make(self, **keywords: Any) -> LockBackend:
        return SQLiteBackend(**keywords)

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Callable[..., None]]:
        table = dict(parts(url).query).get("table", DEFAULT_TABLE)
        with sqlite3.connect(backend.path) as lite:

            def run(statement: str, *params: object) -> None:
                lite.execute(statement.format(t=table).replace("%s", "?"), params)

            yield run

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET token = 'garbage', expires_at = 'soon' WHERE name = %s", name)

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET run_started = 'garbage', run_schedule = 5 WHERE name = %s", name)

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        raw(f"UPDATE {{t}} SET holder = '', expires_at = {FAR_FUTURE} WHERE name = %s", name)

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET expires_at = (julianday('now') - 2440587.5) * 86400.0 - 1 WHERE name = %s", name)


# -- the servers -------------------------------------------------------------------------------


class _MySQL(Traits):
    def keywords(self, url: str) -> LockBackend:
        found = parts(url)
        query = _options(found)
        create_db = query.pop("create_db", "false") == "true"
        return MySQLBackend(
            host=found.host,
            port=found.port,
            user=found.username,
            password=found.password,
            database=found.path.removeprefix("/"),
            create_db=create_db or None,
            **query,
        )

    def make(self, **keywords: Any) -> LockBackend:
        return MySQLBackend(**keywords)

    def address(self, host: str, port: int) -> str:
        return f"mysql://alice:{QUOTED}@{host}:{port}/gomaster?ssl_key_password={KEY_SECRET}"

    @contextlib.contextmanager
    def private(self) -> Iterator[tuple[ThrowawayServer, str]]:
        with MariaDBServer() as server:
            yield server, server.url(create_db="true")

    @contextlib.contextmanager
    def secured(self, url: str, tag: str) -> Iterator[tuple[str, str, str]]:
        found = parts(url)
        connect(url).names(5.0)  # creates the database
        user = f"gm_pw_{uuid.uuid4().hex[:8]}"
        with self._admin(url) as run:
            run(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'")
            run(f"GRANT ALL ON `{found.path.removeprefix('/')}`.* TO '{user}'@'%'")
            try:
                base = f"mysql://{{}}@{found.host}:{found.port}{found.path}?ssl_key_password={QUOTED}"
                yield (
                    base.format(f"{user}:{QUOTED}"),
                    base.format(f"{user}:Wr0ng-{QUOTED}"),
                    base.format(user),
                )
            finally:
                run(f"DROP USER '{user}'@'%'")

    @contextlib.contextmanager
    def _admin(self, url: str, database: str | None = None) -> Iterator[Callable[..., None]]:
        conn = mysql_admin(url, database)
        try:

            def run(statement: str, *params: object) -> None:
                with conn.cursor() as cursor:
                    cursor.execute(statement, params or None)

            yield run
        finally:
            conn.close()

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Callable[..., None]]:
        with self._admin(url, backend.database) as run:
            run("SET SESSION sql_mode = ''")

            def spoil(statement: str, *params: object) -> None:
                run(statement.format(t=f"`{backend.table}`"), *params)

            yield spoil

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET token = -5, expires_at = '2999-01-01' WHERE name = %s", name)

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET run_started = -5 WHERE name = %s", name)

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET holder = '', expires_at = '2999-01-01' WHERE name = %s", name)

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE name = %s", name)


class _PostgreSQL(Traits):
    def keywords(self, url: str) -> LockBackend:
        found = parts(url)
        return PostgreSQLBackend(
            host=found.host,
            port=found.port,
            user=found.username,
            password=found.password,
            database=found.path.removeprefix("/"),
            **_options(found),
        )

    def make(self, **keywords: Any) -> LockBackend:
        return PostgreSQLBackend(**keywords)

    def address(self, host: str, port: int) -> str:
        return f"postgresql://alice:{QUOTED}@{host}:{port}/gomaster?sslpassword={KEY_SECRET}"

    @contextlib.contextmanager
    def private(self) -> Iterator[tuple[ThrowawayServer, str]]:
        with PostgreSQLServer() as server:
            create_database(server)
            yield server, server.url()

    @contextlib.contextmanager
    def secured(self, url: str, tag: str) -> Iterator[tuple[str, str, str]]:
        found = parts(url)
        mine = self.apart(url, tag)
        connect(mine).names(5.0)  # the administrator makes the table
        role = f"gm_{uuid.uuid4().hex[:8]}"
        with self._admin(url) as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(SECRET))
            )
            admin.execute(f'GRANT SELECT, INSERT, UPDATE ON "{tag}" TO {role}')
            try:
                where = f"{found.host}:{found.port}{found.path}?table={tag}&sslpassword={QUOTED}"
                yield (
                    f"postgresql://{role}:{QUOTED}@{where}",
                    f"postgresql://{role}:Wr0ng-{QUOTED}@{where}",
                    f"postgresql://{role}@{where}",
                )
            finally:
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")

    @contextlib.contextmanager
    def _admin(self, url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with postgresql_admin(url) as conn:
            yield conn

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Callable[..., None]]:
        with self._admin(url) as admin:

            def run(statement: str, *params: object) -> None:
                admin.execute(statement.format(t=f'"{backend.table}"').encode(), params or None)

            yield run

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET token = -5, expires_at = '2999-01-01' WHERE name = %s", name)

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET run_started = -5 WHERE name = %s", name)

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET holder = '', expires_at = '2999-01-01' WHERE name = %s", name)

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        raw("UPDATE {t} SET expires_at = clock_timestamp() - interval '1 second' WHERE name = %s", name)


class _Redis(Traits):
    def apart(self, url: str, tag: str) -> str:
        return with_query(url, prefix=tag)

    def keywords(self, url: str) -> LockBackend:
        found = parts(url)
        return RedisBackend(
            found.host,
            found.port,
            db=int(found.path.removeprefix("/") or 0),
            username=found.username,
            password=found.password,
            tls=found.scheme == "rediss",
            **_options(found),
        )

    def make(self, **keywords: Any) -> LockBackend:
        return RedisBackend(**keywords)

    def address(self, host: str, port: int) -> str:
        return f"rediss://alice:{QUOTED}@{host}:{port}/0?ssl_password={KEY_SECRET}"

    @contextlib.contextmanager
    def private(self) -> Iterator[tuple[ThrowawayServer, str]]:
        with RedisServer(args=PERSISTENT) as server:
            yield server, server.url()

    @contextlib.contextmanager
    def secured(self, url: str, tag: str) -> Iterator[tuple[str, str, str]]:
        with RedisServer(password=SECRET) as server:
            yield server.url(), server.url(password="Wr0ng-" + SECRET), server.url(password="")

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(url.partition("?")[0])
        try:
            yield client
        finally:
            client.close()

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        keys = backend.keys(name)
        raw.hset(keys.lease, mapping={"token": "garbage", "expires_at": "soon"})
        raw.set(keys.counter, "-7")

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        raw.hset(backend.keys(name).runs, "run_started", "garbage")

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        lease = backend.keys(name).lease
        raw.hset(lease, mapping={"holder": "", "expires_at": str(int(FAR_FUTURE * 1000))})
        raw.persist(lease)

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        seconds, micros = raw.time()
        raw.hset(backend.keys(name).lease, "expires_at", str(seconds * 1000 + micros // 1000 - 1000))


class _MongoDB(Traits):
    def apart(self, url: str, tag: str) -> str:
        return with_query(url, collection=tag)

    def keywords(self, url: str) -> LockBackend:
        found = parts(url)
        options = dict(found.query)
        return MongoBackend(
            hosts=[f"{found.host}:{found.port}"],
            database=found.path.removeprefix("/"),
            collection=options.pop("collection", DEFAULT_COLLECTION),
            user=found.username,
            password=found.password,
            options=options,
        )

    def make(self, **keywords: Any) -> LockBackend:
        return MongoBackend(**keywords)

    def address(self, host: str, port: int) -> str:
        return f"mongodb://alice:{QUOTED}@{host}:{port}/db?tlsCertificateKeyFilePassword={KEY_SECRET}"

    def through(self, url: str, port: int) -> str:
        # Otherwise the driver learns the server's own address from the replica set's hello
        # and goes around the relay.
        return with_query(super().through(url, port), directConnection="true")

    @contextlib.contextmanager
    def private(self) -> Iterator[tuple[ThrowawayServer, str]]:
        with SecantusServer() as server:
            yield server, server.url

    @contextlib.contextmanager
    def secured(self, url: str, tag: str) -> Iterator[tuple[str, str, str]]:
        with SecantusServer() as server:
            with server.client() as client:
                client.admin.command("createUser", "alice", pwd=SECRET, roles=["root"])
            server.extra_args = ["--auth"]
            server.restart()
            base = f"mongodb://{{}}127.0.0.1:{server.port}/gomaster_test?authSource=admin"
            yield base.format(f"alice:{QUOTED}@"), base.format(f"alice:Wr0ng-{QUOTED}@"), base.format("")

    @contextlib.contextmanager
    def raw(self, url: str, backend: Any) -> Iterator[Any]:
        client: MongoClient[dict[str, Any]] = MongoClient(url.partition("?")[0])
        try:
            yield client[backend.database][backend.collection]
        finally:
            client.close()

    def corrupt_token(self, raw: Any, backend: Any, name: str) -> None:
        raw.update_one({"_id": name}, {"$set": {"token": "garbage", "expires_at": 1.5}})

    def corrupt_ledger(self, raw: Any, backend: Any, name: str) -> None:
        raw.update_one({"_id": name}, {"$set": {"run_started": "garbage"}})

    def expire_far_away(self, raw: Any, backend: Any, name: str) -> None:
        raw.update_one({"_id": name}, {"$set": {"holder": "", "expires_at": int(FAR_FUTURE * 1000)}})

    def expire_now(self, raw: Any, backend: Any, name: str) -> None:
        past = {"$subtract": [{"$toLong": "$$NOW"}, 1000]}
        raw.update_one({"_id": name}, [{"$set": {"expires_at": past}}])


def _document(change: Callable[[dict[str, Any]], object]) -> Spoil:
    """A corruption of a MongoDB document: ``change`` edits it in place, and it is written back."""

    def spoil(raw: Any, backend: Any, name: str) -> None:
        document = raw.find_one({"_id": name})
        change(document)
        raw.replace_one({"_id": name}, document)

    return spoil


def _keys(change: Callable[[redis.Redis, Any], object]) -> Spoil:
    """A corruption of Redis keys: ``change(raw, keys)``."""
    return lambda raw, backend, name: change(raw, backend.keys(name))


#: The lock table as gomaster makes it in SQLite; the hand-made ones change a column or two.
_SQLITE_COLUMNS = {
    "name": "TEXT PRIMARY KEY",
    "holder": "TEXT NOT NULL",
    "version": "TEXT NOT NULL",
    "token": "INTEGER NOT NULL",
    "acquired_at": "REAL NOT NULL",
    "renewed_at": "REAL NOT NULL",
    "expires_at": "REAL NOT NULL",
    "host": "TEXT NOT NULL",
    "pid": "INTEGER NOT NULL",
}


def _sqlite_table(id: str, says: tuple[str, ...], **changed: str) -> Table:
    columns = {**_SQLITE_COLUMNS, **changed}
    return Table(id, f"CREATE TABLE {{t}} ({', '.join(f'{c} {t}' for c, t in columns.items())})", says)


def _sqlite_wrong_type(column: str, declared: str, expected: str) -> Table:
    says = (f"has columns of the wrong type: {column} is {declared or 'untyped'}, expected {expected}",)
    return _sqlite_table(f"{column}-{declared or 'untyped'}", says, **{column: declared})


_MYSQL_AUTH = f"mysql://gm:{QUOTED}@db.invalid/gomaster?"
_POSTGRESQL_AUTH = f"postgresql://gm:{QUOTED}@db.invalid/gomaster?"
_REDIS_AUTH = f":{QUOTED}@"
_MONGO_AUTH = f"alice:{QUOTED}@"
_BAD_COLLECTIONS = {
    "sql": "locks;drop",
    "system": "system.users",
    "dollar": "$cmd",
    "space": "a b",
    "too-long": "x" * 64,
    "dash": "lock-name",
}

TRAITS: dict[str, Traits] = {
    "memory": _Memory("memory", network=False, stores_any_name=True),
    "sqlite": _SQLite(
        "sqlite",
        network=False,
        corruptions=(
            _sql_statements("UPDATE {t} SET token = 'garbage'", "token", "text-token"),
            _sql_statements("UPDATE {t} SET token = -5", "token", "negative-token"),
            _sql_statements("UPDATE {t} SET expires_at = 'soon'", "expires_at", "text-expiry"),
            _sql_statements("UPDATE {t} SET pid = 'x'", "pid", "text-pid"),
        ),
        bad_urls=(
            Refusal(
                "unknown-option", "sqlite:///{dir}/locks.db?no_such_option=1", ("no_such_option", "unknown")
            ),
            Refusal("bad-table", "sqlite:///{dir}/locks.db?table=a;b", ("table",)),
        ),
        bad_keywords=(
            Refusal("bad-table", {"path": "{dir}/locks.db", "table": "x; DROP TABLE y"}, ("table",)),
        ),
        tables=(
            _sqlite_wrong_type("token", "TEXT", "INTEGER"),
            _sqlite_wrong_type("expires_at", "INTEGER", "REAL"),
            _sqlite_wrong_type("holder", "BLOB", "TEXT"),
            _sqlite_wrong_type("pid", "", "INTEGER"),
            Table(
                "missing",
                "CREATE TABLE {t} (name TEXT PRIMARY KEY, holder TEXT)",
                (
                    "is not a gomaster lock table: it lacks the columns version, token",
                    "create it as: CREATE TABLE",
                ),
            ),
            _sqlite_table(
                "no-key", ("needs a primary key (or unique index) on name alone",), name="TEXT NOT NULL"
            ),
            _sqlite_table(
                "other-spellings", (), name="VARCHAR(200) PRIMARY KEY", token="BIGINT", expires_at="DOUBLE"
            ),
        ),
    ),
    "mysql": _MySQL(
        "mysql",
        marks=(pytest.mark.mysql,),
        driver_option={"program_name": "gomaster-test"},
        corruptions=(
            _sql_statements(
                "ALTER TABLE {t} MODIFY token BIGINT NULL; UPDATE {t} SET token = NULL", "token", "null-token"
            ),
            _sql_statements("UPDATE {t} SET token = -5", "token -5", "negative-token"),
            _sql_statements("UPDATE {t} SET holder = 0xFFFE", "holder", "binary-holder"),
            _sql_statements("UPDATE {t} SET expires_at = '0000-00-00'", "expires_at", "zero-expiry"),
            _sql_statements(
                "ALTER TABLE {t} MODIFY pid BIGINT NULL; UPDATE {t} SET pid = NULL", "pid", "null-pid"
            ),
        ),
        bad_urls=(
            Refusal("sql-in-table", _MYSQL_AUTH + "table=locks%3BDROP+TABLE+users", ("table name",)),
            Refusal("quote-in-table", _MYSQL_AUTH + "table=a%60b", ("table name",)),
            Refusal("unknown-option", _MYSQL_AUTH + "no_such_option=1", ("no_such_option", "unknown")),
            Refusal("managed-option", _MYSQL_AUTH + "read_timeout=3", ("read_timeout", "cannot be set")),
            Refusal("not-a-flag", _MYSQL_AUTH + "create_db=maybe", ("create_db", "not a boolean")),
            Refusal(
                "negative-count", _MYSQL_AUTH + "connect_retries=-1", ("connect_retries", "whole number")
            ),
            Refusal(
                "zero-seconds",
                _MYSQL_AUTH + "late_reply_wait=0",
                ("late_reply_wait", "positive number of seconds"),
            ),
        ),
        bad_keywords=(
            Refusal("bad-table", {"host": "db.invalid", "table": "x; DROP TABLE y"}, ("table name",)),
            Refusal("bad-database", {"host": "db.invalid", "database": "a`b"}, ("database name",)),
        ),
        tables=(
            Table(
                "missing",
                "CREATE TABLE {t} (name VARCHAR(200) PRIMARY KEY, owner VARCHAR(10))",
                ("lacks the columns holder, version, token",),
            ),
            Table(
                "wrong-types",
                "CREATE TABLE {t} (name VARBINARY(800) PRIMARY KEY, holder VARBINARY(255), version TEXT, "
                "token INT, acquired_at DATETIME(6), renewed_at DATETIME(6), expires_at TIMESTAMP(6) NULL, "
                "host TEXT, pid INT)",
                ("token is int, expected bigint; expires_at is timestamp, expected datetime",),
            ),
        ),
    ),
    "postgresql": _PostgreSQL(
        "postgresql",
        marks=(pytest.mark.postgresql,),
        driver_option={"application_name": "gomaster-test"},
        corruptions=(
            _sql_statements(
                "ALTER TABLE {t} ALTER token DROP NOT NULL; UPDATE {t} SET token = NULL",
                "token",
                "null-token",
            ),
            _sql_statements("UPDATE {t} SET token = -5", "token -5", "negative-token"),
            _sql_statements(
                "UPDATE {t} SET expires_at = 'infinity'", "expires_at is not finite", "infinite-expiry"
            ),
            _sql_statements(
                "ALTER TABLE {t} ALTER acquired_at DROP NOT NULL; UPDATE {t} SET acquired_at = NULL",
                "acquired_at",
                "null-time",
            ),
            _sql_statements(
                "ALTER TABLE {t} ALTER pid DROP NOT NULL; UPDATE {t} SET pid = NULL", "pid", "null-pid"
            ),
        ),
        bad_urls=(
            Refusal("sql-in-table", _POSTGRESQL_AUTH + "table=locks%3BDROP%20TABLE%20users", ("table name",)),
            Refusal("quote-in-table", _POSTGRESQL_AUTH + "table=a%22b", ("table name",)),
            Refusal("unknown-option", _POSTGRESQL_AUTH + "no_such_option=1", ("no_such_option", "unknown")),
            Refusal("not-a-choice", _POSTGRESQL_AUTH + "sslmode=sometimes", ("sslmode", "disable, allow")),
            Refusal(
                "managed-option",
                _POSTGRESQL_AUTH + "client_encoding=LATIN1",
                ("client_encoding", "cannot be set"),
            ),
            Refusal(
                "negative-seconds",
                _POSTGRESQL_AUTH + "connect_timeout=-1",
                ("connect_timeout", "positive number of seconds"),
            ),
            Refusal(
                "text-seconds",
                _POSTGRESQL_AUTH + "statement_timeout=soon",
                ("statement_timeout", "positive number of seconds"),
            ),
            Refusal("bad-port", _POSTGRESQL_AUTH + "port=99999", ("99999", "not a TCP port")),
        ),
        bad_keywords=(
            Refusal("bad-table", {"host": "db.invalid", "table": "x; DROP TABLE y"}, ("table name",)),
            Refusal("unknown-option", {"host": "db.invalid", "sslmod": "require"}, ("sslmod", "unknown")),
        ),
        tables=(
            Table(
                "missing",
                "CREATE TABLE {t} (name TEXT PRIMARY KEY, owner TEXT)",
                ("lacks the columns holder, version, token",),
            ),
            Table(
                "wrong-types",
                "CREATE TABLE {t} (name TEXT PRIMARY KEY, holder TEXT, version TEXT, token INTEGER, "
                "acquired_at TIMESTAMPTZ, renewed_at TIMESTAMPTZ, expires_at TIMESTAMP, host TEXT, "
                "pid INTEGER)",
                ("token is integer, expected bigint; expires_at is timestamp without time zone",),
            ),
            Table(
                "no-key",
                "CREATE TABLE {t} (name TEXT, holder TEXT, version TEXT, token BIGINT, "
                "acquired_at TIMESTAMPTZ, renewed_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, host TEXT, "
                "pid BIGINT)",
                ("needs a primary key (or unique index) on name",),
            ),
            Table(
                "varchar-with-unique-index",
                "CREATE TABLE {t} (name VARCHAR(200) NOT NULL, holder VARCHAR(64) NOT NULL, "
                "version TEXT NOT NULL, token BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL, "
                "renewed_at TIMESTAMPTZ NOT NULL, "
                "expires_at TIMESTAMPTZ NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL); "
                "CREATE UNIQUE INDEX ON {t} (name)",
            ),
        ),
    ),
    "redis": _Redis(
        "redis",
        marks=(pytest.mark.redis,),
        driver_option={"client_name": "gomaster-test"},
        stores_any_name=True,
        corruptions=(
            Corruption(
                "lease-string", _keys(lambda raw, keys: raw.set(keys.lease, "not a hash")), "holds a string"
            ),
            Corruption(
                "counter-list",
                _keys(lambda raw, keys: (raw.delete(keys.counter), raw.rpush(keys.counter, "1"))),
                "holds a list",
            ),
            Corruption("counter-text", _keys(lambda raw, keys: raw.set(keys.counter, "abc")), "not a token"),
            Corruption(
                "counter-negative", _keys(lambda raw, keys: raw.set(keys.counter, "-5")), "not a token"
            ),
            Corruption(
                "counter-padded", _keys(lambda raw, keys: raw.set(keys.counter, "007")), "not a token"
            ),
            Corruption(
                "counter-huge", _keys(lambda raw, keys: raw.set(keys.counter, "9" * 20)), "not a token"
            ),
            Corruption(
                "negative-token", _keys(lambda raw, keys: raw.hset(keys.lease, "token", "-1")), "out of range"
            ),
            Corruption(
                "text-token", _keys(lambda raw, keys: raw.hset(keys.lease, "token", "seven")), "token"
            ),
            Corruption("no-token", _keys(lambda raw, keys: raw.hdel(keys.lease, "token")), "token"),
            Corruption(
                "text-expiry",
                _keys(lambda raw, keys: raw.hset(keys.lease, "expires_at", "tomorrow")),
                "expires_at",
            ),
            Corruption(
                "binary-holder",
                _keys(lambda raw, keys: raw.hset(keys.lease, "holder", b"\xff\xfe")),
                "holder",
            ),
            Corruption("text-pid", _keys(lambda raw, keys: raw.hset(keys.lease, "pid", "x")), "pid"),
            Corruption("runs-string", _keys(lambda raw, keys: raw.set(keys.runs, "x")), "run ledger"),
            Corruption(
                "runs-padded", _keys(lambda raw, keys: raw.hset(keys.runs, "run_token", "07")), "run_token"
            ),
        ),
        bad_urls=(
            Refusal(
                "space-in-prefix", f"redis://{_REDIS_AUTH}127.0.0.1/0?prefix=bad prefix", ("key prefix",)
            ),
            Refusal("glob-in-prefix", f"redis://{_REDIS_AUTH}127.0.0.1/0?prefix=a*b", ("key prefix",)),
            Refusal("empty-prefix", f"redis://{_REDIS_AUTH}127.0.0.1/0?prefix=", ("key prefix",)),
            Refusal("unknown-option", f"redis://{_REDIS_AUTH}127.0.0.1/0?nosuchoption=1", ("nosuchoption",)),
            Refusal(
                "managed-option",
                f"redis://{_REDIS_AUTH}127.0.0.1/0?health_check_interval=5",
                ("health_check_interval",),
            ),
            Refusal("resp3", f"redis://{_REDIS_AUTH}127.0.0.1/0?protocol=3", ("RESP2",)),
            Refusal("db-option", f"redis://{_REDIS_AUTH}127.0.0.1/0?db=3", ("path",)),
            Refusal("db-not-a-number", f"redis://{_REDIS_AUTH}127.0.0.1/zero", ("database number",)),
            Refusal(
                "text-seconds", f"redis://{_REDIS_AUTH}127.0.0.1/0?socket_timeout=soon", ("socket_timeout",)
            ),
            Refusal(
                "not-a-flag",
                f"redis://{_REDIS_AUTH}127.0.0.1/0?socket_keepalive=perhaps",
                ("socket_keepalive",),
            ),
            Refusal("first-token", f"redis://{_REDIS_AUTH}127.0.0.1/0?first_token=2", ("first_token",)),
            Refusal(
                "tls-option-without-tls",
                f"redis://{_REDIS_AUTH}127.0.0.1/0?ssl_ca_certs=/etc/hosts",
                ("rediss://",),
            ),
            Refusal(
                "missing-ca",
                f"rediss://{_REDIS_AUTH}127.0.0.1/0?ssl_ca_certs=/nonexistent/ca.pem",
                ("ssl_ca_certs",),
            ),
            Refusal(
                "not-a-choice", f"rediss://{_REDIS_AUTH}127.0.0.1/0?ssl_cert_reqs=maybe", ("ssl_cert_reqs",)
            ),
            Refusal("host-list", f"redis://{_REDIS_AUTH}a:1,b:2/0", ("one server",)),
        ),
        bad_keywords=(
            Refusal("bad-prefix", {"prefix": "no spaces"}, ("key prefix",)),
            Refusal("unknown-option", {"colour": "blue"}, ("colour", "unknown")),
        ),
    ),
    "mongodb": _MongoDB(
        "mongodb",
        marks=(pytest.mark.mongodb,),
        driver_option={"appName": "gomaster-test"},
        corruptions=(
            Corruption("no-token", _document(lambda doc: doc.pop("token")), "token"),
            Corruption("no-expiry", _document(lambda doc: doc.pop("expires_at")), "expires_at"),
            Corruption("string-token", _document(lambda doc: doc.update(token="12")), "token"),
            Corruption("negative-token", _document(lambda doc: doc.update(token=-1)), "out of range"),
            Corruption("huge-token", _document(lambda doc: doc.update(token=MAX_TOKEN)), "out of range"),
            Corruption("number-holder", _document(lambda doc: doc.update(holder=42)), "holder"),
            Corruption("text-time", _document(lambda doc: doc.update(expires_at="tomorrow")), "expires_at"),
            Corruption("bool-pid", _document(lambda doc: doc.update(pid=True)), "pid"),
        ),
        bad_urls=(
            Refusal("text-number", f"mongodb://{_MONGO_AUTH}127.0.0.1/db?maxPoolSize=lots", ("maxPoolSize",)),
            Refusal(
                "unknown-option", f"mongodb://{_MONGO_AUTH}127.0.0.1/db?noSuchOption=1", ("noSuchOption",)
            ),
            Refusal(
                "not-a-flag",
                f"mongodb://{_MONGO_AUTH}127.0.0.1/db?w=majority&retryWrites=perhaps",
                ("retryWrites",),
            ),
            Refusal("dotted-database", f"mongodb://{_MONGO_AUTH}127.0.0.1/a.b", ("database name",)),
            Refusal(
                "missing-ca",
                f"mongodb://{_MONGO_AUTH}127.0.0.1/db?tls=true&tlsCAFile=/nonexistent/ca.pem",
                ("tlsCAFile",),
            ),
            Refusal("srv-with-port", f"mongodb+srv://{_MONGO_AUTH}cluster.example.com:27017/db", ("port",)),
            *(
                Refusal(
                    f"collection-{what}",
                    f"mongodb://127.0.0.1:27017/db?collection={quote(name)}",
                    ("collection name",),
                )
                for what, name in _BAD_COLLECTIONS.items()
            ),
        ),
        bad_keywords=(
            Refusal("zero-timeout", {"timeout": 0}, ("timeout",)),
            Refusal("text-number", {"options": {"maxPoolSize": "lots"}}, ("maxPoolSize",)),
            Refusal("no-host", {"hosts": []}, ("host",)),
            *(
                Refusal(f"collection-{what}", {"collection": name}, ("collection name",))
                for what, name in _BAD_COLLECTIONS.items()
            ),
        ),
    ),
}

#: The backends that talk to a server, in the order every table lists them.
SERVERS = [name for name, traits in TRAITS.items() if traits.network]


def param(kind: str, *values: object, id: str | None = None) -> Any:
    """A ``pytest.param`` for ``kind`` with its marks, named ``kind`` or ``kind-id``."""
    return pytest.param(kind, *values, marks=TRAITS[kind].marks, id=kind if id is None else f"{kind}-{id}")
