"""Many electors on one backend: renewals missed, backend queries per second, CPU.

    python -m bench.scale --backend URL [--electors 10,100,1000] [--contenders 10] [--window 20]

Each level runs ``electors`` electors: ``electors / contenders`` lock names with ``contenders``
electors each, hosted ``PER_HOST`` to a process (``python -m bench.scale host``), every elector
with a backend object, and so a connection, of its own. Once every elector has looked at its
lock, the measurement window opens; during it each host counts, per elector, renewals that
succeeded, failed, or came more than ``LATE_HEARTBEATS`` heartbeats after the previous one,
plus elections and demotions (a steady state has none). The driver reads the server's own
query counter and the CPU time of the server and of the hosts over the same window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from bench.stats import percentile
from gomaster.backends import connect
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Demoted, Elected
from gomaster.core.timing import Timing
from gomaster.runtime.clock import boottime
from gomaster.runtime.elector import Election, Elector, RenewOutcome, Watched
from gomaster.runtime.supervise import new_identity

PER_HOST = 100
#: A renewal this many heartbeats after the previous successful one skipped a whole slot.
LATE_HEARTBEATS = 2.0
#: Each thread's stack; an elector's threads need little, and 2,000 of them add up.
STACK_SIZE = 512 * 1024
READY_TIMEOUT = 180.0
#: After every host is ready, let the first elections settle before the window opens.
SETTLE = 3.0
STOP_TIMEOUT = 60.0
#: How long a host waits for one new elector's first look before it starts the next anyway.
FIRST_LOOK = 10.0
_TICK = 0.05


@dataclass(slots=True)
class _Tally:
    """One elector's counts, fed on its own loop thread by ``announce`` and ``watch``."""

    heartbeat: float
    ok: int = 0
    failed: int = 0
    late: int = 0
    elected: int = 0
    demoted: int = 0
    max_gap: float = 0.0
    latencies: list[float] = field(default_factory=list)
    _last_ok: float | None = None

    def announce(self, event: Announcement) -> None:
        if isinstance(event, Elected):
            self.elected += 1
            self._last_ok = boottime()
        elif isinstance(event, Demoted):
            self.demoted += 1
            self._last_ok = None

    def watch(self, seen: Watched) -> None:
        if not isinstance(seen, RenewOutcome):
            return
        if not seen.ok:
            self.failed += 1
            return
        now = boottime()
        if self._last_ok is not None:
            gap = now - self._last_ok
            self.max_gap = max(self.max_gap, gap)
            if gap > LATE_HEARTBEATS * self.heartbeat:
                self.late += 1
        self._last_ok = now
        self.ok += 1
        self.latencies.append(seen.latency)

    def counts(self) -> tuple[int, int, int, int, int, int]:
        return self.ok, self.failed, self.late, self.elected, self.demoted, len(self.latencies)


@dataclass(frozen=True, slots=True)
class HostReport:
    """What one host saw during the window."""

    electors: int
    renewals_ok: int
    renewals_failed: int
    renewals_late: int
    elections: int
    demotions: int
    max_gap: float
    latencies: list[float]
    cpu_seconds: float


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _first_look(elector: Election) -> None:
    """Wait until ``elector`` has read its lock once, so its connection is set up.

    Electors start one after another: a thousand connections opened in the same instant, each
    creating its session and checking the lock table, would only measure that stampede.
    """
    deadline = time.monotonic() + FIRST_LOOK
    while elector.status().seen_at is None and time.monotonic() < deadline:
        time.sleep(_TICK / 10)


def host_main(argv: list[str]) -> None:
    """One host process: run electors until told to stop, report the window as one JSON line."""
    parser = argparse.ArgumentParser(prog="bench.scale host")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--names", required=True)
    parser.add_argument("--contenders", type=int, required=True)
    parser.add_argument("--ttl", type=float, required=True)
    args = parser.parse_args(argv)
    threading.stack_size(STACK_SIZE)
    timing = Timing.from_ttl(args.ttl)
    electors: list[Election] = []
    tallies: list[_Tally] = []
    threads: list[threading.Thread] = []
    for name in args.names.split(","):
        for _ in range(args.contenders):
            tally = _Tally(timing.heartbeat)
            config = Config(name=name, me=new_identity("bench"), timing=timing)
            node = Elector(connect(args.backend))
            elector = node.join(config, tally.announce, watch=tally.watch)
            thread = threading.Thread(target=node.run, daemon=True)
            thread.start()
            electors.append(elector)
            tallies.append(tally)
            threads.append(thread)
            _first_look(elector)
    print("ready", flush=True)
    sys.stdin.readline()
    before = [t.counts() for t in tallies]
    for tally in tallies:
        tally.max_gap = 0.0
    cpu = _cpu_seconds()
    sys.stdin.readline()
    cpu = _cpu_seconds() - cpu
    after = [t.counts() for t in tallies]
    diffs = [[b - a for a, b in zip(old, new, strict=True)] for old, new in zip(before, after, strict=True)]
    latencies = [x for tally, old in zip(tallies, before, strict=True) for x in tally.latencies[old[5] :]]
    report = HostReport(
        electors=len(electors),
        renewals_ok=sum(d[0] for d in diffs),
        renewals_failed=sum(d[1] for d in diffs),
        renewals_late=sum(d[2] for d in diffs),
        elections=sum(d[3] for d in diffs),
        demotions=sum(d[4] for d in diffs),
        max_gap=max(t.max_gap for t in tallies),
        latencies=latencies,
        cpu_seconds=cpu,
    )
    print(json.dumps(asdict(report)), flush=True)
    for elector in electors:
        elector.stop()
    deadline = time.monotonic() + STOP_TIMEOUT
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True, slots=True)
class ScaleLevel:
    """One level's figures over its window (CPU in cores: 1.0 is one core busy)."""

    electors: int
    names: int
    processes: int
    window: float
    heartbeat: float
    renewals_ok: int
    renewals_failed: int
    renewals_late: int
    elections: int
    demotions: int
    max_gap_heartbeats: float
    renew_p50: float
    renew_p99: float
    queries_per_second: float | None
    client_cpu: float
    server_cpu: float | None

    @property
    def missed(self) -> int:
        """Renewals that failed or skipped a slot, plus leaderships lost (goal 0)."""
        return self.renewals_failed + self.renewals_late + self.demotions


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds a process (the server) has used, from /proc."""
    if pid is None:
        return None
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _query_counter(url: str) -> tuple[Callable[[], int], Callable[[], None]] | None:
    """The server's count of statements, for backends that keep one we read here."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        return None
    import pymysql

    conn = pymysql.connect(
        host=parts.hostname, port=parts.port or 3306, user=parts.username or "root", autocommit=True
    )

    def questions() -> int:
        with conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            row = cursor.fetchone()
        return int(row[1]) if row else 0

    return questions, conn.close


def _read_line(stream: IO[str], timeout: float) -> str:
    """A line from a host, or an error if none comes in time."""
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not found or not found[0]:
        raise RuntimeError("a scale host did not answer in time")
    return found[0]


def measure_level(
    url: str,
    *,
    electors: int,
    contenders: int,
    window: float,
    ttl: float,
    server_pid: int | None,
    settle: float = SETTLE,
) -> ScaleLevel:
    """Run one level and collect its window."""
    stamp = int(time.time() * 1000)
    names = [f"scale_{stamp}_{i}" for i in range(max(1, electors // contenders))]
    per_host = max(1, PER_HOST // contenders)
    groups = [names[i : i + per_host] for i in range(0, len(names), per_host)]
    command = [sys.executable, "-m", "bench.scale", "host", "--backend", url]
    command += ["--contenders", str(contenders), "--ttl", str(ttl)]
    hosts = [
        subprocess.Popen(
            [*command, "--names", ",".join(group)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for group in groups
    ]
    counter = _query_counter(url)
    try:
        for host in hosts:
            assert host.stdout is not None
            _read_line(host.stdout, READY_TIMEOUT)
        time.sleep(settle)
        queries = counter[0]() if counter is not None else None
        server_cpu = _process_cpu(server_pid)
        started = time.monotonic()
        for host in hosts:
            assert host.stdin is not None
            host.stdin.write("start\n")
            host.stdin.flush()
        time.sleep(window)
        for host in hosts:
            assert host.stdin is not None
            host.stdin.write("stop\n")
            host.stdin.flush()
        elapsed = time.monotonic() - started
        queries_after = counter[0]() if counter is not None else None
        server_after = _process_cpu(server_pid)
        reports = []
        for host in hosts:
            assert host.stdout is not None
            reports.append(HostReport(**json.loads(_read_line(host.stdout, STOP_TIMEOUT))))
    finally:
        for host in hosts:
            try:
                host.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
        if counter is not None:
            counter[1]()
    latencies = [x for report in reports for x in report.latencies] or [math.nan]
    heartbeat = Timing.from_ttl(ttl).heartbeat
    qps = None
    if queries is not None and queries_after is not None:
        qps = (queries_after - queries) / elapsed
    return ScaleLevel(
        electors=sum(r.electors for r in reports),
        names=len(names),
        processes=len(hosts),
        window=elapsed,
        heartbeat=heartbeat,
        renewals_ok=sum(r.renewals_ok for r in reports),
        renewals_failed=sum(r.renewals_failed for r in reports),
        renewals_late=sum(r.renewals_late for r in reports),
        elections=sum(r.elections for r in reports),
        demotions=sum(r.demotions for r in reports),
        max_gap_heartbeats=max(r.max_gap for r in reports) / heartbeat,
        renew_p50=percentile(latencies, 0.5),
        renew_p99=percentile(latencies, 0.99),
        queries_per_second=qps,
        client_cpu=sum(r.cpu_seconds for r in reports) / elapsed,
        server_cpu=None
        if server_cpu is None or server_after is None
        else (server_after - server_cpu) / elapsed,
    )


def measure(
    url: str,
    *,
    levels: list[int],
    contenders: int = 10,
    window: float = 20.0,
    ttl: float = 5.0,
    server_pid: int | None = None,
    settle: float = SETTLE,
) -> list[ScaleLevel]:
    """Every level in turn, on the same backend."""
    return [
        measure_level(
            url,
            electors=n,
            contenders=contenders,
            window=window,
            ttl=ttl,
            server_pid=server_pid,
            settle=settle,
        )
        for n in levels
    ]


def main() -> None:
    if sys.argv[1:2] == ["host"]:
        host_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", required=True)
    parser.add_argument("--electors", default="10,100,1000")
    parser.add_argument("--contenders", type=int, default=10)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--ttl", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=SETTLE, help="pause before the window opens")
    parser.add_argument("--server-pid", type=int, help="count this process's CPU as the server's")
    args = parser.parse_args()
    levels = [int(n) for n in args.electors.split(",")]
    for level in measure(
        args.backend,
        levels=levels,
        contenders=args.contenders,
        window=args.window,
        ttl=args.ttl,
        server_pid=args.server_pid,
        settle=args.settle,
    ):
        print(level)


if __name__ == "__main__":
    main()
