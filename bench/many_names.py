"""Many names: one node holding 1,000 lock names for minutes on MariaDB while two others follow.

    python -m bench.many_names --backend mysql://root@127.0.0.1:3306/test [--names 1000]
                               [--followers 2] [--duration 300] [--runtime new|before]
                               [--work none|sleep]

Issue 18 asks that one node keep 1,000 names at ``Timing()`` defaults, renewing each every
heartbeat, while two other nodes follow them all. Every node is ``bench.names_node`` (on
``--runtime new``, one ``supervise({...})`` process per node). By default (``--work none``)
each name's target returns at once, so the holder keeps its names with no worker and the run
measures the election alone; ``--work sleep`` gives each held name a worker and a sleeping
target, whose cost per name ``bench.footprint`` measures. The run gets a lock table of its
own (``table=bench_many_<random>``, dropped at the end on MySQL, MariaDB and SQLite). The holder
starts first and fails loudly unless it holds every name within ``--start-limit`` seconds
(``--hold-within``); the harness waits until it does, starts the followers, lets their trees
settle, and then for ``--duration`` seconds reads every record once a second through one
connection (one SELECT of the whole table on MySQL and MariaDB, so the reads hardly load the
machine the nodes run on; one observe per name elsewhere), counting

- token changes: a name acquired again, by anyone, since the previous read;
- foreign reads: a name whose lease was not live and the holder node's when read;
- late renewals: a name whose last renewal (the record's ``renewed_at``, against the backend's
  clock in the same read) was more than ``LATE_HEARTBEATS`` heartbeats old, once per episode;
- demotions: lines of the holder's own log, during the window, that say it was demoted; and
  elections the followers log during the window.

A follower counts as started once its log says, for every name, who it is waiting for.

Missed renewals are token changes + foreign reads + late renewals; the goal is 0 of them and 0
demotions. Each node's whole process tree is measured over the same window: CPU in % of one core,
processes and PSS (``bench.proctree``), next to the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import secrets
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from bench.launch import Launched, node_env, settle, with_option
from bench.names_node import (
    LOGGED_DEMOTED,
    LOGGED_ELECTED,
    LOGGED_FOLLOWING,
    RUNTIMES,
    WORKS,
    Runtime,
    Work,
    is_supervisor,
    lock_names,
)
from bench.proctree import CpuWindow, tree
from gomaster.backends import LockBackend, connect
from gomaster.core.timing import Timing

NAMES = 1000
FOLLOWERS = 2
DURATION = 300.0
SETTLE = 5.0
#: The holder must hold every name this soon after its start, or the run fails.
START_LIMIT = 300.0
#: A renewal this many heartbeats old when read skipped at least one heartbeat.
LATE_HEARTBEATS = 2.0
#: How often every record is read.
READ_EVERY = 1.0
READ_TIMEOUT = 5.0
#: Schemes whose lock table is named by the ``table`` option.
SQL_SCHEMES = ("mysql", "mariadb", "sqlite", "postgresql", "postgres")
MYSQL_SCHEMES = ("mysql", "mariadb")
MYSQL_PORT = 3306


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One node's tree over the window."""

    role: str
    processes: int
    pss_mib: float
    cpu_percent: float


@dataclass(frozen=True, slots=True)
class ManyNames:
    """What one run saw (seconds unless named otherwise)."""

    scheme: str
    runtime: str
    work: str
    names: int
    followers: int
    duration: float
    heartbeat: float
    held_in: float
    reads: int
    slowest_read: float
    token_changes: int
    foreign_reads: int
    late_renewals: int
    oldest_renewal: float
    demotions: int
    #: The holder's demotions before the window, while it took its names.
    start_demotions: int
    follower_elections: int
    #: The harness's own CPU over the window (mostly its reads), in % of one core.
    reader_cpu_percent: float
    load_before: float
    load_after: float
    nodes: list[NodeFigures] = field(default_factory=list)

    @property
    def missed(self) -> int:
        """Renewals that did not happen, as the records show them (goal 0)."""
        return self.token_changes + self.foreign_reads + self.late_renewals


def fresh_table(url: str) -> tuple[str, str | None]:
    """``url`` with a lock table of its own for SQL backends, and that table's name."""
    if urlsplit(url).scheme not in SQL_SCHEMES:
        return url, None
    table = f"bench_many_{secrets.token_hex(4)}"
    return with_option(url, "table", table), table


def _mysql(url: str) -> Any:
    """A PyMySQL connection (autocommit: each read sees the latest rows) to ``url``'s database."""
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "localhost",
        port=parts.port or MYSQL_PORT,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=parts.path.removeprefix("/") or None,
        autocommit=True,
    )


def drop_table(url: str, table: str) -> None:
    """Drop the run's lock table where this harness knows how (MySQL, MariaDB, SQLite)."""
    scheme = urlsplit(url).scheme
    if scheme in MYSQL_SCHEMES:
        conn = _mysql(url)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS `{table}`")
        finally:
            conn.close()
    elif scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db, as gomaster reads them.
        with contextlib.closing(sqlite3.connect(url.partition("?")[0].removeprefix("sqlite:///"))) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.commit()


@dataclass(frozen=True, slots=True)
class _Seen:
    """One record as read: live or not, its token and holder, and how long ago it was renewed
    (both judged by the backend's clock)."""

    live: bool
    token: int
    pid: int
    host: str
    age: float


def _observe_all(backend: LockBackend, names: list[str]) -> dict[str, _Seen]:
    """Every record by one observe each: for any backend, but a round trip per name."""
    from returns.io import IO
    from returns.unsafe import unsafe_perform_io

    found = {}
    for name in names:
        seen = unsafe_perform_io(IO.from_ioresult(backend.observe(name, READ_TIMEOUT))).value_or(None)
        record = seen.record if seen is not None else None
        if seen is not None and record is not None:
            live = record.live_at(seen.server_now)
            age = seen.server_now - record.renewed_at
            found[name] = _Seen(live, record.token, record.pid, record.host, age)
    return found


def _select_all(conn: Any, table: str) -> dict[str, _Seen]:
    """Every record of a MySQL/MariaDB lock table in one statement, its times judged by the
    server's clock (``UTC_TIMESTAMP(6)`` is fixed within a statement; the columns are UTC).
    None yet before the holder has made the table."""
    import pymysql
    from pymysql.constants import ER

    now = "UTC_TIMESTAMP(6)"
    with conn.cursor() as cursor:
        try:
            cursor.execute(
                f"SELECT name, holder <> '' AND expires_at > {now}, token, pid, host, "
                f"TIMESTAMPDIFF(MICROSECOND, renewed_at, {now}) FROM `{table}`"
            )
        except pymysql.err.ProgrammingError as exc:
            if exc.args[0] == ER.NO_SUCH_TABLE:
                return {}
            raise
        rows = cursor.fetchall()
    return {
        bytes(name).decode(): _Seen(bool(live), int(token), int(pid), str(host), int(micros) / 1e6)
        for name, live, token, pid, host, micros in rows
    }


class _Reads:
    """Every record read again and again through one connection, and the counts. On MySQL and
    MariaDB one SELECT reads the whole table; elsewhere one observe per name does, which costs
    a round trip per name (too heavy to do every second for 1,000 names beside the nodes)."""

    def __init__(self, url: str, backend: LockBackend, names: list[str], heartbeat: float) -> None:
        scheme = urlsplit(url).scheme
        table = dict(parse_qsl(urlsplit(url).query)).get("table")
        if scheme in MYSQL_SCHEMES and table is not None:
            conn = _mysql(url)
            self._all: Callable[[], dict[str, _Seen]] = lambda: _select_all(conn, table)
            self.close: Callable[[], None] = conn.close
        else:
            self._all = lambda: _observe_all(backend, names)
            self.close = lambda: None
        self._names = names
        self._late_after = LATE_HEARTBEATS * heartbeat
        self._tokens: dict[str, int] = {}
        self._late: set[str] = set()
        self.reads = 0
        self.slowest = 0.0
        self.token_changes = 0
        self.foreign = 0
        self.late = 0
        self.oldest = 0.0

    def held_by(self, pids: set[int], host: str) -> bool:
        """True when every name's lease is live and held by one of ``pids`` on ``host``."""
        found = self._all()
        return all(
            (seen := found.get(name)) is not None and seen.live and seen.pid in pids and seen.host == host
            for name in self._names
        )

    def read(self, holder_pids: set[int], host: str) -> None:
        started = time.monotonic()
        found = self._all()
        for name in self._names:
            seen = found.get(name)
            if seen is None or not seen.live:
                self.foreign += 1
                continue
            if seen.pid not in holder_pids or seen.host != host:
                self.foreign += 1
            before = self._tokens.get(name)
            if before is not None and before != seen.token:
                self.token_changes += 1
            self._tokens[name] = seen.token
            self.oldest = max(self.oldest, seen.age)
            if seen.age > self._late_after:
                if name not in self._late:
                    self.late += 1
                    self._late.add(name)
            else:
                self._late.discard(name)
        self.reads += 1
        self.slowest = max(self.slowest, time.monotonic() - started)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    url: str,
    *,
    names: int = NAMES,
    followers: int = FOLLOWERS,
    duration: float = DURATION,
    runtime: Runtime = "new",
    work: Work = "none",
    quiet: float = SETTLE,
    start_limit: float = START_LIMIT,
    logs: Path | None = None,
    read_every: float = READ_EVERY,
) -> ManyNames:
    """One run on a table of its own: the holder takes every name, the followers join, the
    window is read; every node is stopped and the table dropped whatever happens. The nodes'
    logs are kept in ``logs`` when given."""
    url, table = fresh_table(url)
    prefix = f"many{secrets.token_hex(3)}"
    backend = connect(url)
    reads = _Reads(url, backend, lock_names(prefix, names), Timing().heartbeat)
    nodes: list[Launched] = []
    with tempfile.TemporaryDirectory(prefix="gomaster-many-") as scratch:
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        try:
            return _run(
                url,
                reads,
                nodes,
                logs or Path(scratch),
                prefix=prefix,
                names=names,
                followers=followers,
                duration=duration,
                runtime=runtime,
                work=work,
                quiet=quiet,
                start_limit=start_limit,
                read_every=read_every,
            )
        finally:
            for node in reversed(nodes):
                node.stop()
            reads.close()
            backend.close()
            if table is not None:
                drop_table(url, table)


def _run(
    url: str,
    reads: _Reads,
    nodes: list[Launched],
    scratch: Path,
    *,
    prefix: str,
    names: int,
    followers: int,
    duration: float,
    runtime: Runtime,
    work: Work,
    quiet: float,
    start_limit: float,
    read_every: float,
) -> ManyNames:
    """The run itself; every node it starts goes into ``nodes`` for the caller to stop."""
    heartbeat = Timing().heartbeat
    host = socket.gethostname()
    command = [sys.executable, "-m", "bench.names_node", "--runtime", runtime, "--backend", url]
    command += ["--prefix", prefix, "--count", str(names), "--work", work]
    holder = Launched(
        [*command, "--hold-within", str(start_limit)], env=node_env(), log=scratch / "holder.log"
    )
    nodes.append(holder)

    def held() -> bool:
        return reads.held_by(set(tree(holder.pid)), host)

    held_in = settle(holder, held=held, quiet=quiet, limit=start_limit, what="the holder")
    for i in range(followers):
        follower = Launched(command, env=node_env(), log=scratch / f"follower{i + 1}.log")
        nodes.append(follower)

        def following(node: Launched = follower) -> bool:
            return node.logged(LOGGED_FOLLOWING) >= names

        settle(follower, held=following, quiet=quiet, limit=start_limit, what=f"follower {i + 1}")
    holder_pids = set(tree(holder.pid))
    reads.read(holder_pids, host)
    windows = [CpuWindow([node.pid], include_root=is_supervisor(runtime, names)) for node in nodes]
    offsets = [node.log.stat().st_size for node in nodes]
    start_demotions = holder.logged(LOGGED_DEMOTED)
    load_before = os.getloadavg()[0]
    for window in windows:
        window.open()
    reader_cpu = _own_cpu()
    started = time.monotonic()
    next_read = started + read_every
    while (now := time.monotonic()) < started + duration:
        time.sleep(max(0.0, next_read - now))
        next_read = max(next_read + read_every, time.monotonic())
        for node in nodes:
            node.check()
        reads.read(holder_pids, host)
    usages = [window.close() for window in windows]
    elapsed = time.monotonic() - started
    reader_cpu = _own_cpu() - reader_cpu
    load_after = os.getloadavg()[0]
    demotions = holder.logged(LOGGED_DEMOTED, offsets[0])
    elections = sum(node.logged(LOGGED_ELECTED, at) for node, at in zip(nodes[1:], offsets[1:], strict=True))
    roles = ["holder", *(f"follower {i + 1}" for i in range(followers))]
    return ManyNames(
        scheme=urlsplit(url).scheme,
        runtime=runtime,
        work=work,
        names=names,
        followers=followers,
        duration=elapsed,
        heartbeat=heartbeat,
        held_in=held_in,
        reads=reads.reads,
        slowest_read=reads.slowest,
        token_changes=reads.token_changes,
        foreign_reads=reads.foreign,
        late_renewals=reads.late,
        oldest_renewal=reads.oldest,
        demotions=demotions,
        start_demotions=start_demotions,
        follower_elections=elections,
        reader_cpu_percent=100.0 * reader_cpu / elapsed,
        load_before=load_before,
        load_after=load_after,
        nodes=[
            NodeFigures(role, u.processes, u.pss_mib, u.cpu_percent)
            for role, u in zip(roles, usages, strict=True)
        ],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.many_names",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", required=True, help="e.g. mysql://root@127.0.0.1:3306/test")
    parser.add_argument("--names", type=int, default=NAMES)
    parser.add_argument("--followers", type=int, default=FOLLOWERS)
    parser.add_argument("--duration", type=float, default=DURATION)
    parser.add_argument("--runtime", choices=RUNTIMES, default="new")
    parser.add_argument("--work", choices=WORKS, default="none", help="what each held name runs")
    parser.add_argument(
        "--settle", type=float, default=SETTLE, help="each node's tree unchanged this long (s)"
    )
    parser.add_argument("--start-limit", type=float, default=START_LIMIT)
    parser.add_argument("--logs", type=Path, help="keep the nodes' logs in this directory")
    parser.add_argument("--read-every", type=float, default=READ_EVERY, help="read every record this often")
    args = parser.parse_args(argv)
    run = measure(
        args.backend,
        names=args.names,
        followers=args.followers,
        duration=args.duration,
        runtime=args.runtime,
        work=args.work,
        quiet=args.settle,
        start_limit=args.start_limit,
        logs=args.logs,
        read_every=args.read_every,
    )
    print(
        f"{run.names} names on {run.scheme} ({run.runtime} runtime, work {run.work}), "
        f"{run.followers} followers, {run.duration:.1f} s window, "
        f"holder held every name {run.held_in:.1f} s after its start"
    )
    print(
        f"missed renewals {run.missed} (token changes {run.token_changes}, foreign reads "
        f"{run.foreign_reads}, late {run.late_renewals}; oldest renewal {run.oldest_renewal:.2f} s, "
        f"heartbeat {run.heartbeat:g} s), demotions {run.demotions} ({run.start_demotions} while the "
        f"holder took its names), follower elections "
        f"{run.follower_elections}; {run.reads} reads of every record, slowest {run.slowest_read:.2f} s"
    )
    for node in run.nodes:
        print(
            f"{node.role:<11} {node.processes:>4} processes {node.pss_mib:8.1f} MiB PSS "
            f"{node.cpu_percent:7.2f} % CPU"
        )
    print(f"harness (reads) {run.reader_cpu_percent:7.2f} % CPU")
    print(f"load average {run.load_before:.2f} -> {run.load_after:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
