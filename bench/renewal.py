"""What one renewal costs: backend round trips, server statements, and latency against a ping.

    python -m bench.renewal --backend URL [--renewals 500]

- Round trips are counted on the wire: the backend connects through ``bench.proxy``, a relay
  that counts each time the client speaks after the server did. The figure is the round trips
  on the connection that carried the renewals, divided by the renewals (a driver's monitoring
  connections are reported apart). SQLite is in-process: it has no round trips.
- Statements are counted by the server itself, from another session: MySQL's global
  ``Questions``, MongoDB's ``serverStatus().opcounters``, Redis's ``INFO commandstats`` calls,
  PostgreSQL's ``pg_stat_database.xact_commit``, and for SQLite every statement the connection
  runs (``set_trace_callback``). The counter's own reads are measured and subtracted.
- Latency: each round times ``backend.renew`` (everything the elector waits for), a raw
  ``SELECT 1`` (``ping`` for MongoDB and Redis) and the cheapest write (bump one counter in a
  scratch row, or ``INCR`` a key), both sent on the same connection; interleaved so that all
  three see the same machine load.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from returns.io import IOResult
from returns.pipeline import is_successful
from returns.result import Result

from bench.proxy import CountingProxy
from bench.stats import Summary, summarize
from gomaster.backends import LockBackend, connect
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.record import LockRecord, Observation
from gomaster.core.timing import Timing
from gomaster.runtime._io import performed
from gomaster.runtime.supervise import new_identity

#: Long enough that no lease expires during a measurement.
TTL = 60.0
TIMEOUT = 5.0
WARMUP = 20
GOAL_ROUND_TRIPS = 1.0
GOAL_RATIO = 1.3
#: PostgreSQL publishes a session's counters at most once a second (PGSTAT_MIN_INTERVAL).
_PG_STATS_FLUSH = 1.2
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RenewalCost:
    """One backend's renewal figures (latencies in seconds)."""

    backend: str
    renewals: int
    round_trips: float | None
    other_turns: int
    statements: float | None
    counter: str
    renew: Summary
    ping: Summary
    ping_what: str
    write: Summary
    #: Record fields whose values are not plain Python types, as ``field: module.Type``.
    foreign_types: tuple[str, ...] = ()
    #: Seconds a fresh interpreter takes to unpickle the token as the backend returns it.
    token_unpickle: float | None = None

    @property
    def ratio_p50(self) -> float:
        return self.renew.p50 / self.ping.p50

    @property
    def ratio_p99(self) -> float:
        return self.renew.p99 / self.ping.p99

    @property
    def write_ratio_p50(self) -> float:
        return self.renew.p50 / self.write.p50


def _kind(url: str) -> str:
    scheme = urlsplit(url).scheme
    return {"mariadb": "mysql", "postgres": "postgresql"}.get(scheme, scheme)


def _sure(outcome: IOResult[_T, str]) -> _T:
    """The value of a step that must work, or ``RuntimeError`` saying what failed."""
    done = performed(outcome)
    if not is_successful(done):
        raise RuntimeError(done.failure())
    return done.unwrap()


def _acquire(backend: LockBackend, name: str) -> LockRecord:
    """Take the lock ``name`` (nobody else contends for it) and return the fresh record."""
    me = new_identity("bench")
    timing = Timing.from_ttl(TTL)

    def plan(seen: Observation) -> Result[Claim, str]:
        return plan_acquire(seen, name, me, timing).alt(lambda held: f"lock {name} is held: {held}")

    def claim(planned: Claim) -> IOResult[LockRecord, str]:
        return backend.claim(planned, TIMEOUT).alt(lambda error: f"claim failed: {error}")

    observed = backend.observe(name, TIMEOUT).alt(lambda error: f"observe failed: {error}")
    return _sure(observed.bind_result(plan).bind(claim))


def foreign_types(record: LockRecord) -> tuple[str, ...]:
    """Fields of ``record`` holding a driver's type (an int subclass, say) instead of a builtin.

    Such a value travels inside every ``Elected`` event, and unpickling it makes a warm worker
    import the driver's module at the moment it should start the work.
    """
    found = []
    for name in ("token", "pid", "acquired_at", "renewed_at", "expires_at", "holder", "version", "host"):
        kind = type(getattr(record, name))
        if kind.__module__ != "builtins":
            found.append(f"{name}: {kind.__module__}.{kind.__qualname__}")
    return tuple(found)


_UNPICKLE = """
import pickle, sys, time
data = bytes.fromhex(sys.argv[1])
started = time.perf_counter()
pickle.loads(data)
print(time.perf_counter() - started)
"""


def unpickle_seconds(value: object) -> float:
    """How long a fresh interpreter (as a spawned worker is) takes to unpickle ``value``."""
    done = subprocess.run(
        [sys.executable, "-c", _UNPICKLE, pickle.dumps(value).hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT * 6,
    )
    return float(done.stdout)


def _renew(backend: LockBackend, record: LockRecord) -> LockRecord:
    return _sure(backend.renew(record, TTL, TIMEOUT).alt(lambda error: f"renewal failed: {error}"))


# -- a raw round trip on the backend's own connection ----------------------------------------


def _conn(backend: LockBackend) -> Any:
    """The connection the backend's steps use in this process (its session's; a step made it)."""
    return vars(backend)["_session"].conn


def _raw_ping(kind: str, backend: LockBackend) -> tuple[Callable[[], object], str]:
    """A call that makes one trivial round trip on the connection the backend itself uses."""
    if kind in ("sqlite", "postgresql"):
        return (lambda: _conn(backend).execute("SELECT 1").fetchall()), "SELECT 1"
    if kind == "mysql":

        def select_one() -> object:
            with _conn(backend).cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchall()

        return select_one, "SELECT 1"
    if kind == "mongodb":
        return (lambda: _conn(backend).client.admin.command("ping")), "ping"
    if kind == "redis":

        def ping() -> object:
            _conn(backend).send_command("PING")
            return _conn(backend).read_response()

        return ping, "PING"
    raise ValueError(f"no raw ping for {kind}")


def _raw_write(kind: str, backend: LockBackend, url: str) -> Callable[[], object]:
    """The cheapest write on the same connection: bump a counter in a scratch row or key."""
    if kind in ("sqlite", "mysql", "postgresql"):
        quote = "`" if kind == "mysql" else '"'
        table = f"{quote}bench_scratch{quote}"
        setup = [
            f"CREATE TABLE IF NOT EXISTS {table} (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
            f"DELETE FROM {table}",
            f"INSERT INTO {table} (k, v) VALUES (1, 0)",
        ]
        bump = f"UPDATE {table} SET v = v + 1 WHERE k = 1"
        if kind in ("sqlite", "postgresql"):
            for sql in setup:
                _conn(backend).execute(sql)
            return lambda: _conn(backend).execute(bump)

        def execute(sql: str) -> object:
            with _conn(backend).cursor() as cursor:
                return cursor.execute(sql)

        for sql in setup:
            execute(sql)
        return lambda: execute(bump)
    if kind == "mongodb":
        scratch = _conn(backend).client[urlsplit(url).path.strip("/") or "gomaster"]["bench_scratch"]
        return lambda: scratch.update_one({"_id": 1}, {"$inc": {"v": 1}}, upsert=True)
    if kind == "redis":
        def incr() -> object:
            _conn(backend).send_command("INCR", "bench_scratch")
            return _conn(backend).read_response()

        return incr
    raise ValueError(f"no raw write for {kind}")


# -- server-side statement counters ----------------------------------------------------------


class _Counter:
    """Reads a server's own count of statements (or commands) from a separate session."""

    def __init__(self, kind: str, url: str, backend: LockBackend) -> None:
        self.kind = kind
        self._read: Callable[[], int]
        self._close: Callable[[], object] = lambda: None
        self.label = ""
        if kind == "sqlite":
            self._traced = 0
            _conn(backend).set_trace_callback(self._trace)
            self._read, self.label = (lambda: self._traced), "statements run (sqlite3 trace callback)"
        elif kind == "mysql":
            import pymysql

            parts = urlsplit(url)
            conn = pymysql.connect(
                host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", autocommit=True
            )

            def questions() -> int:
                with conn.cursor() as cursor:
                    cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
                    row = cursor.fetchone()
                return int(row[1]) if row else 0

            self._read, self._close, self.label = questions, conn.close, "global Questions"
        elif kind == "mongodb":
            from pymongo import MongoClient

            parts = urlsplit(url)
            client: MongoClient[dict[str, Any]] = MongoClient(
                f"mongodb://{parts.netloc}/?directConnection=true"
            )

            def opcounters() -> int:
                counters = client.admin.command("serverStatus")["opcounters"]
                return sum(int(v) for v in counters.values())

            self._read, self._close, self.label = opcounters, client.close, "serverStatus opcounters"
        elif kind == "redis":
            import redis

            rclient = redis.Redis.from_url(url)

            def calls() -> int:
                stats = rclient.info("commandstats")
                return sum(int(entry["calls"]) for entry in stats.values())

            self._read, self._close = calls, rclient.close
            self.label = "INFO commandstats calls, commands inside the Lua script included"
        elif kind == "postgresql":
            import psycopg

            pconn = psycopg.connect(url.split("?", maxsplit=1)[0], autocommit=True)

            def commits() -> int:
                # A session publishes its counters when a transaction ends at least a second
                # after it last did: wait, then end one on the backend's own connection.
                time.sleep(_PG_STATS_FLUSH)
                _conn(backend).execute("SELECT 1")
                pconn.execute("SELECT pg_stat_clear_snapshot()")
                row = pconn.execute(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                ).fetchone()
                return int(row[0]) if row else 0

            self._read, self._close = commits, pconn.close
            self.label = "pg_stat_database xact_commit"

    def _trace(self, _statement: str) -> None:
        self._traced += 1

    def read(self) -> int:
        return self._read()

    def close(self) -> None:
        self._close()


def _port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"{url} names no port")
    return port


def _through(url: str, proxy_port: int) -> str:
    """The same URL with the server's port replaced by the relay's."""
    proxied = url.replace(f":{_port(url)}", f":{proxy_port}", 1)
    if _kind(url) == "mongodb":
        proxied += ("&" if "?" in proxied else "?") + "directConnection=true"
    return proxied


def _round_trips(url: str, renewals: int, name: str) -> tuple[float, int]:
    """Round trips per renewal on the busiest connection, and the other connections' turns."""
    with CountingProxy(_port(url)) as proxy:
        backend = connect(_through(url, proxy.port))
        try:
            record = _acquire(backend, name)
            for _ in range(WARMUP):
                record = _renew(backend, record)
            before = proxy.turns()
            for _ in range(renewals):
                record = _renew(backend, record)
            after = proxy.turns()
        finally:
            backend.close()
    before += [0] * (len(after) - len(before))
    deltas = [b - a for a, b in zip(before, after, strict=True)]
    busiest = max(deltas)
    return busiest / renewals, sum(deltas) - busiest


def measure(url: str, *, renewals: int = 500) -> RenewalCost:
    """Round trips, statements and latency of ``renewals`` renewals on the backend at ``url``."""
    kind = _kind(url)
    stamp = f"{int(time.time() * 1000)}"
    backend = connect(url)
    try:
        record = _acquire(backend, f"bench_renew_{stamp}")
        for _ in range(WARMUP):
            record = _renew(backend, record)
        ping, ping_what = _raw_ping(kind, backend)
        write = _raw_write(kind, backend, url)
        renew_times: list[float] = []
        ping_times: list[float] = []
        write_times: list[float] = []
        for _ in range(renewals):
            started = time.perf_counter()
            ping()
            pinged = time.perf_counter()
            record = _renew(backend, record)
            renewed = time.perf_counter()
            write()
            write_times.append(time.perf_counter() - renewed)
            renew_times.append(renewed - pinged)
            ping_times.append(pinged - started)
        counter = _Counter(kind, url, backend)
        try:
            first = counter.read()
            idle = counter.read() - first
            start = counter.read()
            for _ in range(renewals):
                record = _renew(backend, record)
            statements = (counter.read() - start - idle) / renewals
        finally:
            counter.close()
    finally:
        backend.close()
    round_trips, other = (None, 0) if kind == "sqlite" else _round_trips(url, renewals, f"bench_rt_{stamp}")
    return RenewalCost(
        backend=kind,
        renewals=renewals,
        round_trips=round_trips,
        other_turns=other,
        statements=statements,
        counter=counter.label,
        renew=summarize(renew_times),
        ping=summarize(ping_times),
        ping_what=ping_what,
        write=summarize(write_times),
        foreign_types=foreign_types(record),
        token_unpickle=unpickle_seconds(record.token),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", required=True)
    parser.add_argument("--renewals", type=int, default=500)
    args = parser.parse_args()
    cost = measure(args.backend, renewals=args.renewals)
    trips = "in-process" if cost.round_trips is None else f"{cost.round_trips:.2f}"
    print(f"round trips per renewal  {trips} (other connections: {cost.other_turns} turns)")
    print(f"statements per renewal   {cost.statements:.2f} ({cost.counter})")
    print(f"renew p50/p99            {cost.renew.p50 * 1e3:.3f} / {cost.renew.p99 * 1e3:.3f} ms")
    print(f"{cost.ping_what:24s} {cost.ping.p50 * 1e3:.3f} / {cost.ping.p99 * 1e3:.3f} ms")
    print(f"single-row write         {cost.write.p50 * 1e3:.3f} / {cost.write.p99 * 1e3:.3f} ms")
    print(f"ratio p50/p99            {cost.ratio_p50:.2f} / {cost.ratio_p99:.2f} (goal <= {GOAL_RATIO})")


if __name__ == "__main__":
    main()
