"""``repair`` on records corrupted by hand in each real store: it never crashes, never lowers the
token, and leaves a record the election can use again."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from typing import Any

import psycopg
import pymysql
import redis
from pymongo import MongoClient

from gomaster.backends import LockBackend, force_release
from gomaster.backends.memory import MemoryBackend
from gomaster.backends.mongodb import MongoBackend
from gomaster.backends.mysql import MySQLBackend
from gomaster.backends.postgresql import PostgreSQLBackend
from gomaster.backends.redis import RedisBackend
from gomaster.backends.sqlite import DEFAULT_TABLE, SQLiteBackend
from gomaster.backends.url import parse_url
from gomaster.core.decide import plan_acquire
from gomaster.core.record import LockRecord, MalformedRecord
from gomaster.core.timing import Timing
from tests.backends.conftest import BackendCase
from tests.helpers import err, identity, ok, result

TIMEOUT = 5.0
#: A year-2999 expiry, in epoch seconds: a row nobody would ever be allowed to claim.
FAR_FUTURE = 32_472_144_000.0


def _claimed(backend: LockBackend, name: str) -> LockRecord:
    seen = ok(backend.observe(name, TIMEOUT))
    return ok(backend.claim(plan_acquire(seen, name, identity(), Timing()).unwrap(), TIMEOUT))


def _sql(case: BackendCase, backend: LockBackend, statement: str, name: str) -> None:
    """Run ``statement`` (``{t}`` is the table, one placeholder is the name) behind the backend."""
    assert case.url is not None
    parts = parse_url(case.url).unwrap()
    match backend:
        case SQLiteBackend():
            with sqlite3.connect(backend.path) as lite:
                lite.execute(statement.format(t=DEFAULT_TABLE).replace("%s", "?"), (name,))
        case MySQLBackend():
            my: Any = pymysql.connect(
                host=parts.host,
                port=parts.port or 3306,
                user=parts.username,
                password=parts.password or "",
                database=backend.database,
                autocommit=True,
            )
            with my.cursor() as cursor:
                cursor.execute("SET SESSION sql_mode = ''")
                cursor.execute(statement.format(t=f"`{backend.table}`"), (name,))
            my.close()
        case PostgreSQLBackend():
            with psycopg.connect(
                host=parts.host,
                port=parts.port or 5432,
                user=parts.username,
                password=parts.password,
                dbname=backend.database,
                autocommit=True,
            ) as pg:
                pg.execute(statement.format(t=f'"{backend.table}"').encode(), (name,))
        case _:
            raise AssertionError(f"not an SQL backend: {backend!r}")


def _mongo_set(case: BackendCase, backend: MongoBackend, name: str, fields: dict[str, object]) -> None:
    """``$set`` fields of the lock document behind the backend's back."""
    assert case.url is not None
    client: MongoClient[dict[str, Any]] = MongoClient(case.url)
    client[backend.database][backend.collection].update_one({"_id": name}, {"$set": fields})
    client.close()


def _redis_raw(case: BackendCase) -> redis.Redis:
    """A plain client on the backend's server, for writes behind its back."""
    assert case.url is not None
    return redis.Redis.from_url(case.url)


def _corrupt_token(case: BackendCase, backend: LockBackend, name: str) -> None:
    """Make the token garbage (and the expiry with it), as a bad hand edit would."""
    match backend:
        case SQLiteBackend():
            _sql(case, backend, "UPDATE {t} SET token = 'garbage', expires_at = 'soon' WHERE name = %s", name)
        case MySQLBackend() | PostgreSQLBackend():
            _sql(case, backend, "UPDATE {t} SET token = -5, expires_at = '2999-01-01' WHERE name = %s", name)
        case MongoBackend():
            _mongo_set(case, backend, name, {"token": "garbage", "expires_at": 1.5})
        case RedisBackend():
            raw = _redis_raw(case)
            keys = backend.keys(name)
            raw.hset(keys.lease, mapping={"token": "garbage", "expires_at": "soon"})
            raw.set(keys.counter, "-7")
            raw.close()
        case _:
            raise AssertionError(f"no way to corrupt a token in {backend!r}")


def _expire_far_away(case: BackendCase, backend: LockBackend, name: str) -> None:
    """Give the row a valid but absurd expiry: nobody could claim it for centuries."""
    match backend:
        case MemoryBackend():
            store = backend.store
            store.records[name] = replace(store.records[name], holder="", expires_at=FAR_FUTURE)
        case SQLiteBackend():
            statement = f"UPDATE {{t}} SET holder = '', expires_at = {FAR_FUTURE} WHERE name = %s"
            _sql(case, backend, statement, name)
        case MySQLBackend() | PostgreSQLBackend():
            _sql(case, backend, "UPDATE {t} SET holder = '', expires_at = '2999-01-01' WHERE name = %s", name)
        case MongoBackend():
            _mongo_set(case, backend, name, {"holder": "", "expires_at": int(FAR_FUTURE * 1000)})
        case RedisBackend():
            raw = _redis_raw(case)
            lease = backend.keys(name).lease
            raw.hset(lease, mapping={"holder": "", "expires_at": str(int(FAR_FUTURE * 1000))})
            raw.persist(lease)
            raw.close()
        case _:
            raise AssertionError(f"unknown backend {backend!r}")


def test_a_garbage_token_is_replaced_by_the_clock_in_ms_and_the_lock_works_again(
    shared_case: BackendCase, lock_name: str
) -> None:
    """Every store but memory, whose typed records cannot hold a garbage token."""
    backend = shared_case.make()
    record = _claimed(backend, lock_name)
    _corrupt_token(shared_case, backend, lock_name)
    assert isinstance(result(backend.observe(lock_name, TIMEOUT)).failure(), MalformedRecord)
    before = int(time.time() * 1000)
    token = ok(backend.repair(lock_name, 0.0, 0, TIMEOUT))
    assert token is not None and token > record.token
    assert abs(token - before) < 60_000, "the new token is not the clock in milliseconds"
    assert _claimed(backend, lock_name).token == token + 1
    backend.close()


def test_force_release_of_a_malformed_record_reports_it_malformed_not_unreachable(
    shared_case: BackendCase, lock_name: str
) -> None:
    """``gomaster release`` must be able to point at ``repair``, which it cannot from an outage."""
    backend = shared_case.make()
    _claimed(backend, lock_name)
    _corrupt_token(shared_case, backend, lock_name)
    problem = err(force_release(backend, lock_name, TIMEOUT))
    assert isinstance(problem, MalformedRecord), f"reported as {problem!r}"
    assert problem.name == lock_name
    backend.close()


def test_a_row_that_expires_in_centuries_is_claimable_after_the_hold_with_its_token(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    record = _claimed(backend, lock_name)
    _expire_far_away(case, backend, lock_name)
    stuck = ok(backend.observe(lock_name, TIMEOUT))
    assert stuck.record is not None and stuck.record.expires_at > stuck.server_now + 10**9
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    assert _claimed(backend, lock_name).token == record.token + 1
