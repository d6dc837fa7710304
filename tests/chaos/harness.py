"""Chaos harness: groups of real nodes on a real backend, faults from a seeded schedule.

A *group* is one throwaway backend server of its own (or one SQLite file), ``nodes`` nodes and
``locks`` lock names. Every node runs one supervisor process carrying every lock name (or, with
``Plan.packed`` off, one process per lock) and reaches the server through a fault proxy port of
its own, shared by its processes as a host's network would be. The work of every master appends
witness marks to one log per lock, and only those logs are judged (:func:`gomaster.testing.judge`).

A group applies its faults one at a time: wait until every lock has a working master (and, when a
node process was started lately, until it has had ``BOOT_TTLS`` to boot), apply a fault, clear
it, and wait again. Groups share nothing, so several run in parallel, each in a
thread of the harness process; the proxies of all of them share one :class:`ProxyHub`.

Fault kinds, and the moment the liveness clock starts for each (the *reference*):

==================  ==============================================================  ==========
kind                what                                                            reference
==================  ==============================================================  ==========
kill_supervisor     SIGKILL the master's supervisor (its workers die with it);      the kill
                    a fresh process replaces it
kill_worker         SIGKILL the master's work process; the supervisor restarts it   the kill
freeze_node         SIGSTOP the master's whole process tree for 1.2-1.8 ttl, then   the stop
                    SIGCONT; its work must end within 0.2 s of resuming
cut_node            the master's node proxy resets everything for 0.3-2 ttl          the cut
blackhole_node      the master's node proxy drops every byte for 0.3-2 ttl           the start
delay_node          the master's node proxy delays 10 ms..renew_deadline/6 each     the start
                    way for 1-2 ttl; the master should keep its mastership
freeze_backend      SIGSTOP the server for 0.2-2 ttl                                the thaw
restart_backend     stop and start the server (same port and data)                  ready again
lock_backend        SQLite only (no server): another process holds the write lock   the unlock
                    for 0.2-2 ttl
==================  ==============================================================  ==========

Groups of ``Plan.aio_groups`` run asyncio applications instead (``tests.chaos.node --aio``): the
work of each name is a task in the node's event loop, its election in a ``gomaster.aio.Master``'s
supervisor child. There ``kill_worker`` has no process to kill; these kinds apply instead
(``freeze_node`` and the proxy and server kinds as above):

==================  ==============================================================  ==========
kind                what                                                            reference
==================  ==============================================================  ==========
kill_app            SIGKILL the master's application (its supervisors die with it)  the kill
kill_supervisor     SIGKILL the supervisor of the master's name alone; the task is  the kill
                    cancelled and the application starts a new Master
stop_supervisor     SIGSTOP the supervisor of the master's name alone for 1.2-1.8   the stop
                    ttl: the application's guard must cancel the task in time
block_loop          SIGUSR1 makes the task block the loop (a sync ``time.sleep``    the start
                    loop writing marks for 3 ttl) while the node loses its lease:
                    its proxy cut for 1-1.5 ttl (SQLite: that supervisor stopped);
                    the application must be ended (exit 70 by its guard, or
                    SIGKILL by its supervisor) before anyone else is master
==================  ==============================================================  ==========

Every master's work is adversarial (``tests.chaos.node``): each tenure starts three children that
ignore SIGTERM (one in the work's group, one in a new session, one double-forked). One of them
still alive ``ESCAPEE_LIMIT`` after the harness saw a newer tenure of its lock (or, for a frozen
node, after it resumed and had ``grace``), or after the run, is a survivor: a violation.

Node faults leave the other nodes a working backend, so the next master must be at work within
``ttl + 2 * heartbeat`` of the fault itself. Backend faults stop every node, so the master
demotes itself if the fault outlasts ``renew_deadline``; there the clock starts when the fault
clears.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gomaster.core.timing import Timing
from gomaster.runtime.guard import EXIT_OVERRUN
from gomaster.testing import STALE_LIMIT, Freeze, Judgement, judge, longest_gap, read_marks
from tests.chaos.node import BLOCK_TTLS
from tests.chaos.proxy import BLACKHOLE, CUT, PASS, FaultProxy, ProxyHub, delayed
from tests.chaos.ticks import TickVerdict, judge_ticks

ROOT = Path(__file__).resolve().parents[2]

NODE_KINDS = ("kill_supervisor", "kill_worker", "freeze_node")
#: The node kinds of asyncio applications (``Plan.aio_groups``).
AIO_NODE_KINDS = ("kill_app", "kill_supervisor", "freeze_node", "stop_supervisor", "block_loop")
PROXY_KINDS = ("cut_node", "blackhole_node", "delay_node")
SERVER_KINDS = ("freeze_backend", "restart_backend")
ALL_KINDS = (
    "kill_supervisor",
    "kill_worker",
    "kill_app",
    "freeze_node",
    "stop_supervisor",
    "block_loop",
    *PROXY_KINDS,
    *SERVER_KINDS,
    "lock_backend",
)
#: Faults whose liveness clock starts when they clear (every node lost the backend; for a
#: failover, when the promoted replica takes writes: tests/chaos/failover.py).
CLEARING_KINDS = frozenset({*SERVER_KINDS, "lock_backend", "failover", "handover_failover"})
SERVER_BACKENDS = ("mysql", "mongodb", "postgresql", "redis")
BACKENDS = ("sqlite", *SERVER_BACKENDS)

#: Polling period of the harness when it waits for something to show in a log.
POLL = 0.02
#: A master counts as at work when its newest mark is younger than this (marks come every 50 ms).
FRESH = 0.25
#: After a fault clears, wait at least this long before the next one, in ttls.
SETTLE_TTLS = 0.3
#: Give up waiting for a master after this long (seconds) and record the group as stuck.
STUCK_AFTER = 30.0
#: Nodes and servers get this long to come up at the start of a group.
STARTUP = 60.0
#: A node process gets this many ttls to boot (start its elector and spawn its zygote)
#: before the next fault: the group's first ones at the start, a replacement after a SIGKILL
#: of a supervisor. A fault in that window would time a cold boot on a busy 2-core host (up to
#: 3 s there), not a failover.
BOOT_TTLS = 3.0
#: How long a resumed master's work process may take to vanish before it is reported.
GONE_WITHIN = 2.0
#: Set to end every group after its current fault (the run then judges what it has).
STOP = threading.Event()
#: Redis keeps its keys across a restart only with an append-only file, synced on every write.
PERSISTENT_REDIS = ("--appendonly", "yes", "--appendfsync", "always")
#: Lines of a witness log quoted around a violation.
EXCERPT_LINES = 12
#: An escapee of an ended tenure may be seen alive this long after the harness saw a newer
#: tenure of its lock: the harness polls, and a kill takes a moment to show in /proc.
ESCAPEE_LIMIT = 0.3


def liveness_bound(timing: Timing) -> float:
    """The issue's bound on time without a master after a fault: ``ttl + 2 * heartbeat``."""
    return timing.ttl + 2 * timing.heartbeat


def kinds_for(backend: str, aio: bool = False) -> tuple[str, ...]:
    """The fault kinds that apply: SQLite has no server or socket, only its file's write lock;
    asyncio applications have no work process, but a supervisor apart and a loop to block."""
    node = AIO_NODE_KINDS if aio else NODE_KINDS
    if backend == "sqlite":
        return (*node, "lock_backend")
    return (*node, *PROXY_KINDS, *SERVER_KINDS)


# ---- servers --------------------------------------------------------------------------------


class Server(Protocol):
    """A throwaway backend the harness started and may freeze, thaw and restart."""

    port: int

    def url_via(self, port: int) -> str:
        """The backend URL for a client that connects through loopback ``port``."""
        ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def restart(self) -> None: ...

    def close(self) -> None: ...


class _MariaDB:
    def __init__(self, workdir: Path) -> None:
        from tests.servers.mysql import MariaDBServer

        self._server = MariaDBServer().start()
        self.port = self._server.port
        #: The server's error log is kept here when it is removed, as evidence for the report.
        self._log = workdir / "mariadb-error.log"

    def url_via(self, port: int) -> str:
        return f"mysql://root@127.0.0.1:{port}/gomaster_test?create_db=true"

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def restart(self) -> None:
        self._server.restart()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._log.parent.mkdir(parents=True, exist_ok=True)
            self._log.write_text(self._server.log_text())
        self._server.cleanup()


class _Secantus:
    def __init__(self, workdir: Path) -> None:
        from tests.servers.mongodb import SecantusServer

        self._server = SecantusServer(workdir)
        self._server.start()
        self.port = self._server.port

    def url_via(self, port: int) -> str:
        # directConnection: otherwise the driver learns the server's own address from the
        # replica set's hello and goes around the proxy.
        return f"mongodb://127.0.0.1:{port}/gomaster_test?directConnection=true"

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def restart(self) -> None:
        self._server.restart()

    def close(self) -> None:
        self._server.stop()


class _PostgreSQL:
    def __init__(self) -> None:
        from tests.servers.postgresql import PostgreSQLServer, create_database

        self._server = PostgreSQLServer().start()
        create_database(self._server)
        self.port = self._server.port

    def url_via(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/gomaster_test"

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def restart(self) -> None:
        self._server.restart()

    def close(self) -> None:
        self._server.cleanup()


class _Redis:
    def __init__(self) -> None:
        from tests.servers import redis as fixtures

        # Persistent, as DESIGN.md requires for fencing across restarts: a restart that loses the
        # lease key lets a follower claim while the old master is still within its deadline.
        self._server = fixtures.RedisServer(args=PERSISTENT_REDIS).start()
        self.port = self._server.port

    def url_via(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def freeze(self) -> None:
        self._server.freeze()

    def thaw(self) -> None:
        self._server.thaw()

    def restart(self) -> None:
        self._server.restart()

    def close(self) -> None:
        self._server.cleanup()


#: Servers are started one at a time: concurrent ``mariadb-install-db`` runs were seen to collide
#: on temporary tables in /tmp ("Could not remove temporary table ... Unknown table
#: 'mysql.tmp_user_sys'").
_STARTING = threading.Lock()
#: Attempts at starting a server before the group gives up.
START_ATTEMPTS = 3


def start_server(backend: str, workdir: Path) -> Server:
    """A fresh server of ``backend``'s kind, ready for connections (retried: installs can collide
    with other programs' on this machine too)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            with _STARTING:
                return _start_server(backend, workdir / f"try-{attempt}")
        except RuntimeError:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _start_server(backend: str, workdir: Path) -> Server:
    if backend == "mysql":
        return _MariaDB(workdir)
    if backend == "mongodb":
        return _Secantus(workdir)
    if backend == "postgresql":
        return _PostgreSQL()
    if backend == "redis":
        return _Redis()
    raise ValueError(f"no server for backend {backend!r}")


# ---- what happened --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One fault as applied: times are ``CLOCK_MONOTONIC``, like the marks."""

    group: int
    index: int
    kind: str
    lock: str
    target: str
    token: int | None
    started: float
    cleared: float
    detail: str

    @property
    def reference(self) -> float:
        """When the liveness clock starts (see the module docstring)."""
        return self.cleared if self.kind in CLEARING_KINDS else self.started


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """What the witness logs show after one fault."""

    fault: Fault
    gap: float
    gap_lock: str
    new_tenures: int
    stale_window: float | None = None
    worker_gone_after: float | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken guarantee, with the evidence to find it again."""

    what: str
    where: str
    evidence: str
    #: When it happened (``CLOCK_MONOTONIC``), to set it beside the machine's load at the time.
    at: float = field(default_factory=time.monotonic)


@dataclass
class GroupResult:
    """One group's faults, what the logs show, and any violation."""

    backend: str
    group: int
    seed: str
    bound: float
    outcomes: list[Outcome] = field(default_factory=list)
    judgements: dict[str, Judgement] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    elapsed: float = 0.0
    #: Children the masters' work started to try to outlive their tenures, and those that did.
    escapees: int = 0
    survivors: int = 0
    #: Each scheduled lock's runs, judged (process groups with ``Plan.every``).
    ticks: dict[str, TickVerdict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How one backend is exercised."""

    backend: str
    faults: int
    groups: int = 1
    nodes: int = 5
    locks: int = 3
    #: Each node carries all its locks in one supervisor (else one supervisor per lock).
    packed: bool = True
    ttl: float = 1.0
    seed: int = 1
    kinds: tuple[str, ...] = ()
    #: Extra URL query options for every node, e.g. a driver setting under test.
    options: str = ""
    #: The last this many groups run asyncio applications (``tests.chaos.node --aio``).
    aio_groups: int = 0
    #: Each name of a process group also runs a job every this many seconds (0: none), judged
    #: by :mod:`tests.chaos.ticks`.
    every: float = 0.0

    @property
    def timing(self) -> Timing:
        """The timings every node runs with."""
        return Timing.from_ttl(self.ttl)

    def is_aio(self, group: int) -> bool:
        """Whether ``group`` runs asyncio applications."""
        return group >= self.groups - self.aio_groups

    def faults_of(self, group: int) -> int:
        """Faults are shared out among groups as evenly as possible."""
        share, extra = divmod(self.faults, self.groups)
        return share + (1 if group < extra else 0)


# ---- processes ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def session_members(session: int) -> list[int]:
    """Live processes of session ``session`` (a node's supervisor and everything below it)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[3]) == session:
                found.append(int(entry))
    return sorted(found, key=lambda pid: pid != session)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@dataclass
class _Proc:
    """One node's supervisor process (``tests.chaos.node``) for its locks, in its own session."""

    label: str
    node: str
    locks: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    killed: bool = False


class _Tail:
    """Reads a witness log incrementally; keeps the newest token and its newest mark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.token = 0
        self.node = ""
        self.pid = 0
        self.last = float("-inf")

    def poll(self) -> None:
        """Read what was appended since the last poll; a line still being written waits."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                data = log.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                mark = json.loads(line)
            except ValueError:
                continue
            token = mark.get("token")
            if not isinstance(token, int) or token < self.token:
                continue
            at = float(mark["t"])
            self.last = max(self.last, at) if token == self.token else at
            self.token, self.node, self.pid = token, str(mark["node"]), int(mark["pid"])

    def working(self, now: float) -> bool:
        """The newest token's work wrote a mark a moment ago."""
        return self.token > 0 and now - self.last < FRESH


@dataclass(frozen=True, slots=True)
class Escapee:
    """A child a master's work started to outlive its tenure (see ``tests.chaos.node``)."""

    lock: str
    token: int
    node: str
    pid: int


class _Escapees:
    """The escapees a group's work started, read from the file they append themselves to.

    A PID counts as the escapee only while its command line holds the group's ``marker``, so a
    PID the kernel gave to another process after the escapee died is never taken for it.
    """

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker
        self._offset = 0
        self._open: list[Escapee] = []
        self.count = 0

    def poll(self) -> None:
        """Read the escapees recorded since the last poll (a line being written waits)."""
        try:
            with self.path.open("rb") as listing:
                listing.seek(self._offset)
                data = listing.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            lock, token, node, pid = line.split()
            self._open.append(Escapee(lock, int(token), node, int(pid)))
            self.count += 1

    def _is_alive(self, escapee: Escapee) -> bool:
        try:
            with open(f"/proc/{escapee.pid}/cmdline", "rb") as cmdline:
                holds = self.marker.encode() in cmdline.read()
        except OSError:
            return False
        return holds and alive(escapee.pid)

    def alive(self) -> list[Escapee]:
        """The escapees still alive (the dead are forgotten)."""
        self._open = [escapee for escapee in self._open if self._is_alive(escapee)]
        return list(self._open)

    def kill(self, escapee: Escapee) -> None:
        """End a survivor (it is ours: its command line holds our marker)."""
        if self._is_alive(escapee):
            _signal(escapee.pid, signal.SIGKILL)
        self._open = [other for other in self._open if other != escapee]


# ---- one group ------------------------------------------------------------------------------


class Group:
    """One server (or SQLite file), its nodes and proxies, and its fault schedule."""

    def __init__(
        self,
        plan: Plan,
        index: int,
        workdir: Path,
        hub: ProxyHub | None,
        booted: threading.Barrier | None = None,
    ) -> None:
        self.plan = plan
        self.index = index
        self.workdir = workdir
        self.hub = hub
        #: Passed by every group of the backend once its own nodes are up.
        self.booted = booted
        self.seed = f"{plan.seed}:{plan.backend}:{index}"
        self.aio = plan.is_aio(index)
        self.rng = random.Random(self.seed)
        self.timing = plan.timing
        self.locks = [f"lock-{chr(ord('a') + i)}" for i in range(plan.locks)]
        self.nodes = [f"n{i + 1}" for i in range(plan.nodes)]
        self.server: Server | None = None
        self.proxies: dict[str, FaultProxy] = {}
        self.procs: dict[tuple[str, str], _Proc] = {}
        self.retired: list[_Proc] = []
        self.generation = 0
        #: No fault before this time: a node process started last is still booting until then.
        self.booting_until = 0.0
        self.tails = {lock: _Tail(self.log(lock)) for lock in self.locks}
        self.faults: list[Fault] = []
        self.freezes: dict[str, list[Freeze]] = {lock: [] for lock in self.locks}
        self.gone_after: dict[int, float] = {}
        self.problems: list[Violation] = []
        self.result = GroupResult(plan.backend, index, self.seed, liveness_bound(self.timing))
        self._node_log = workdir / "nodes.log"
        self._sqlite = workdir / "locks.db"
        self._escapees = _Escapees(workdir / "escapees.txt", f"86400.{os.getpid()}{index:03d}{plan.seed}")
        #: When the harness first saw each token of each lock.
        self._seen: dict[tuple[str, int], float] = {}

    def log(self, lock: str) -> Path:
        """The witness log of ``lock``."""
        return self.workdir / f"{lock}.jsonl"

    def where(self, fault: Fault | None = None) -> str:
        """Where to look: backend, seed, group, and the fault's index and kind."""
        text = f"{self.plan.backend} seed {self.seed} group {self.index}{' (asyncio)' if self.aio else ''}"
        return text if fault is None else f"{text} fault #{fault.index} {fault.kind}"

    # -- set-up and tear-down ------------------------------------------------------------

    def url_for(self, node: str) -> str:
        url = (
            f"sqlite:///{self._sqlite}"
            if self.server is None
            else self.server.url_via(self.proxies[node].port)
        )
        if self.plan.options:
            url += ("&" if "?" in url else "?") + self.plan.options
        return url

    def spawn(self, node: str, locks: tuple[str, ...]) -> _Proc:
        self.generation += 1
        label = f"{node}:{self.generation}" if self.plan.packed else f"{node}:{locks[0]}:{self.generation}"
        command = [sys.executable, "-m", "tests.chaos.node", "--backend", self.url_for(node)]
        command += ["--log", str(self.workdir / "{lock}.jsonl"), "--node", label]
        command += ["--ttl", repr(self.timing.ttl)]
        for lock in locks:
            command += ["--name", lock]
        command += ["--escapees", str(self._escapees.path), "--marker", self._escapees.marker]
        if self.aio:
            command += ["--aio", "--pids", str(self._pids_of(label))]
        elif self.plan.every:
            command += ["--every", repr(self.plan.every), "--runs", str(self.workdir / "{lock}.runs.jsonl")]
        with self._node_log.open("ab") as output:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
        proc = _Proc(label, node, locks, popen)
        for lock in locks:
            self.procs[node, lock] = proc
        self.booting_until = time.monotonic() + BOOT_TTLS * self.timing.ttl
        return proc

    def _pids_of(self, label: str) -> Path:
        """Where the asyncio node ``label`` writes each Master's supervisor pid."""
        return self.workdir / f"{label.replace(':', '-')}.pids"

    def start(self) -> None:
        if self.plan.backend != "sqlite":
            self.server = start_server(self.plan.backend, self.workdir / "server")
            assert self.hub is not None
            for node in self.nodes:
                self.proxies[node] = self.hub.add(self.server.port)
        for node in self.nodes:
            for locks in self.seats():
                self.spawn(node, locks)
        if not self.wait_masters(STARTUP, time.monotonic()):
            raise RuntimeError(f"{self.where()}: no master on every lock within {STARTUP} s")

    def wait_for_other_groups(self) -> None:
        """Start faults only once every group of the backend has booted, plus ``BOOT_TTLS``.

        Servers start one at a time, so the last group boots well after the first; its boot
        load (servers, node processes, zygotes) would otherwise land on the first group's
        first faults and time a busy host's boot, not a failover.
        """
        if self.booted is not None:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.booted.wait(STARTUP * START_ATTEMPTS * self.plan.groups)
        self.booting_until = time.monotonic() + BOOT_TTLS * self.timing.ttl

    def stop(self) -> None:
        """End every process this group started, by session, then the proxies and the server.

        Sessions are listed while their leaders live, so that no PID is taken for ours after the
        kernel gave it to someone else. Retired processes were killed and reaped already; a
        worker that outlived one would have shown in the witness log.
        """
        live = [proc for proc in self.current() if proc.popen.poll() is None]
        members = {proc.popen.pid: session_members(proc.popen.pid) for proc in live}
        for proc in live:
            for pid in members[proc.popen.pid]:
                _signal(pid, signal.SIGCONT)
            proc.popen.terminate()
        deadline = time.monotonic() + 10.0
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            if proc.popen.poll() is None:
                proc.popen.kill()
            for pid in members[proc.popen.pid]:
                fields = _stat(pid)
                if fields is not None and int(fields[3]) == proc.popen.pid:
                    _signal(pid, signal.SIGKILL)
        for proc in [*self.current(), *self.retired]:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait()
        self._escapees.poll()
        self.result.escapees = self._escapees.count
        settled = time.monotonic() + self.timing.grace + ESCAPEE_LIMIT
        while self._escapees.alive() and time.monotonic() < settled:
            time.sleep(POLL)
        for escapee in self._escapees.alive():
            self._survived(escapee, "still alive after every node of the group stopped")
        for proxy in self.proxies.values():
            with contextlib.suppress(RuntimeError, TimeoutError):
                proxy.close()
        if self.server is not None:
            self.server.close()

    # -- waiting -------------------------------------------------------------------------

    def poll(self) -> None:
        now = time.monotonic()
        for lock, tail in self.tails.items():
            tail.poll()
            self._seen.setdefault((lock, tail.token), now)
        self._escapees.poll()
        for escapee in self._escapees.alive():
            newer = self.tails[escapee.lock].token
            if newer > escapee.token and now > self._escapee_deadline(escapee, newer):
                self._survived(escapee, f"still alive when token {newer} had been at work a while")

    def _escapee_deadline(self, escapee: Escapee, newer: int) -> float:
        """Until when an escapee of an ended tenure may live: a while after the harness saw the
        newer tenure, or after its frozen node resumed and had ``grace`` to end its work."""
        deadline = self._seen[escapee.lock, newer] + ESCAPEE_LIMIT
        for freeze in self.freezes[escapee.lock]:
            if freeze.node == escapee.node:
                deadline = max(deadline, freeze.resumed + self.timing.grace + ESCAPEE_LIMIT)
        return deadline

    def _survived(self, escapee: Escapee, how: str) -> None:
        self.result.survivors += 1
        self.problems.append(
            Violation(
                f"escapee of token {escapee.token} on {escapee.lock} outlived its tenure",
                self.where(self._fault_at(time.monotonic())),
                f"pid {escapee.pid} of {escapee.node}: {how}",
            )
        )
        self._escapees.kill(escapee)

    def wait_masters(self, timeout: float, since: float) -> bool:
        """Until every lock's newest token has been at work since ``since`` and just now.

        Marks written before the fault cleared say nothing about who is master after it.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.replace_dead()
            self.poll()
            now = time.monotonic()
            if all(tail.working(now) and tail.last >= since for tail in self.tails.values()):
                return True
            time.sleep(POLL)
        return False

    def replace_dead(self) -> None:
        """A node process that died without our kill is a finding; it is replaced either way."""
        for proc in self.current():
            code = proc.popen.poll()
            if code is None:
                continue
            if not proc.killed:
                self.problems.append(
                    Violation(
                        "node exited by itself",
                        self.where(),
                        f"{proc.label} exited with {code}; see {self._node_log}",
                    )
                )
            self.retired.append(proc)
            self.spawn(proc.node, proc.locks)

    def seats(self) -> list[tuple[str, ...]]:
        """The locks of each process a node runs: all in one, or one each."""
        return [tuple(self.locks)] if self.plan.packed else [(lock,) for lock in self.locks]

    def current(self) -> list[_Proc]:
        """Every node process now in service, once each."""
        return list({id(proc): proc for proc in self.procs.values()}.values())

    def master(self, lock: str) -> _Proc | None:
        """The process whose work wrote ``lock``'s newest token."""
        label = self.tails[lock].node
        return next((p for p in self.procs.values() if p.label == label), None)

    # -- faults --------------------------------------------------------------------------

    def schedule(self) -> Iterator[str]:
        """Every applicable kind once per round, in a seeded order."""
        kinds = list(self.plan.kinds or kinds_for(self.plan.backend, self.aio))
        while True:
            self.rng.shuffle(kinds)
            yield from kinds

    def run(self) -> GroupResult:
        started = time.monotonic()
        try:
            try:
                self.start()
            except BaseException:
                if self.booted is not None:
                    self.booted.abort()  # the other groups must not wait for this one
                raise
            self.wait_for_other_groups()
            kinds = self.schedule()
            for index in range(self.plan.faults_of(self.index)):
                if STOP.is_set():
                    break
                self.inject(index, next(kinds))
                time.sleep(SETTLE_TTLS * self.timing.ttl)
                if not self.wait_masters(STUCK_AFTER, self.faults[-1].cleared):
                    self.problems.append(
                        Violation(
                            "no master on some lock",
                            self.where(self.faults[-1]),
                            f"still no master {STUCK_AFTER} s after the fault cleared",
                        )
                    )
            self.poll()
        except Exception:
            # The harness itself failed (a server that would not restart, say): keep what was
            # witnessed so far, and say so, rather than lose a long run.
            self.problems.append(Violation("harness error", self.where(), traceback.format_exc()))
        finally:
            ended = time.monotonic()
            self.stop()
            self.result.elapsed = ended - started
        self.judge(ended)
        return self.result

    def inject(self, index: int, kind: str) -> None:
        time.sleep(max(0.0, self.booting_until - time.monotonic()))
        lock = self.rng.choice(self.locks)
        self.poll()
        token = self.tails[lock].token
        apply: Callable[[str], tuple[float, float, str, str]] = getattr(self, f"_{kind}")
        began, cleared, target, detail = apply(lock)
        self.faults.append(
            Fault(
                group=self.index,
                index=index,
                kind=kind,
                lock=lock,
                target=target,
                token=token,
                started=began,
                cleared=cleared,
                detail=detail,
            )
        )

    def _victim(self, lock: str) -> _Proc:
        proc = self.master(lock)
        if proc is None:
            raise RuntimeError(f"{self.where()}: the master of {lock} is not a process of ours")
        return proc

    def _kill_supervisor(self, lock: str) -> tuple[float, float, str, str]:
        """The master's supervisor: the node process, or an asyncio node's child for ``lock``."""
        if not self.aio:
            return self._kill_app(lock)
        proc = self._victim(lock)
        pid = self._supervisor_of(proc, lock)
        began = time.monotonic()
        _signal(pid, signal.SIGKILL)
        self.booting_until = began + BOOT_TTLS * self.timing.ttl  # the node starts a new Master
        return began, began, proc.label, f"supervisor {pid} of {lock}"

    def _supervisor_of(self, proc: _Proc, lock: str) -> int:
        """The pid of the supervisor child that the asyncio node ``proc`` runs for ``lock``."""
        lines = self._pids_of(proc.label).read_text().splitlines()
        pid = next(int(line.split()[1]) for line in reversed(lines) if line.split()[0] == lock)
        fields = _stat(pid)
        if fields is None or int(fields[1]) != proc.popen.pid:
            raise RuntimeError(f"{self.where()}: {pid} is no longer the supervisor of {lock} in {proc.label}")
        return pid

    def _stop_supervisor(self, lock: str) -> tuple[float, float, str, str]:
        proc = self._victim(lock)
        pid = self._supervisor_of(proc, lock)
        hold = self.timing.ttl * self.rng.uniform(1.2, 1.8)
        began = time.monotonic()
        _signal(pid, signal.SIGSTOP)
        time.sleep(max(0.0, began + hold - time.monotonic()))
        _signal(pid, signal.SIGCONT)
        resumed = time.monotonic()
        return began, resumed, proc.label, f"supervisor {pid} of {lock} stopped {resumed - began:.3f} s"

    def _block_loop(self, lock: str) -> tuple[float, float, str, str]:
        proc = self._victim(lock)
        hold = self.timing.ttl * self.rng.uniform(1.0, 1.5)
        stopped = [] if self.server is not None else [self._supervisor_of(proc, lock)]
        began = time.monotonic()
        _signal(proc.popen.pid, signal.SIGUSR1)
        if self.server is not None:
            self.proxies[proc.node].set(CUT)
        for pid in stopped:
            _signal(pid, signal.SIGSTOP)
        time.sleep(hold)
        if self.server is not None:
            self.proxies[proc.node].set(PASS)
        for pid in stopped:
            _signal(pid, signal.SIGCONT)
        cleared = time.monotonic()
        how = "cut" if self.server is not None else "supervisor stopped"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(max(0.0, began + (BLOCK_TTLS + 1) * self.timing.ttl - time.monotonic()))
        code = proc.popen.poll()
        if code in (EXIT_OVERRUN, -signal.SIGKILL):
            proc.killed = True  # what the promise demands; replace_dead starts a new node
            ender = "its guard (exit 70)" if code == EXIT_OVERRUN else "its supervisor (SIGKILL)"
            return began, cleared, proc.label, f"{how} {cleared - began:.3f} s; application ended by {ender}"
        self.problems.append(
            Violation(
                "a loop blocked past its lease was not ended",
                self.where(),
                f"{proc.label}: {how} for {cleared - began:.3f} s; the application "
                + ("is still alive" if code is None else f"exited with {code}"),
            )
        )
        return began, cleared, proc.label, f"{how} {cleared - began:.3f} s; application not ended ({code})"

    def _kill_app(self, lock: str) -> tuple[float, float, str, str]:
        """SIGKILL the node process (for a process node, that is its supervisor)."""
        proc = self._victim(lock)
        proc.killed = True
        began = time.monotonic()
        proc.popen.kill()
        proc.popen.wait()
        self.retired.append(proc)
        self.spawn(proc.node, proc.locks)
        return began, began, proc.label, f"{'application' if self.aio else 'supervisor'} {proc.popen.pid}"

    def _kill_worker(self, lock: str) -> tuple[float, float, str, str]:
        proc = self._victim(lock)
        worker = self.tails[lock].pid
        began = time.monotonic()
        _signal(worker, signal.SIGKILL)
        return began, began, proc.label, f"worker {worker}"

    def _freeze_node(self, lock: str) -> tuple[float, float, str, str]:
        proc = self._victim(lock)
        worker = self.tails[lock].pid
        hold = self.timing.ttl * self.rng.uniform(1.2, 1.8)
        began = time.monotonic()
        frozen: list[int] = []
        while True:  # a worker being spawned right now must not escape
            fresh = [pid for pid in session_members(proc.popen.pid) if pid not in frozen]
            if not fresh:
                break
            for pid in fresh:
                _signal(pid, signal.SIGSTOP)
            frozen += fresh
        time.sleep(max(0.0, began + hold - time.monotonic()))
        resumed = time.monotonic()
        for pid in frozen:
            _signal(pid, signal.SIGCONT)
        for frozen_lock in proc.locks:  # every lock of the frozen process was frozen with it
            self.freezes[frozen_lock].append(Freeze(proc.label, began, resumed))
        if not self.aio:  # an asyncio node's work is a task: its marks show when it ended
            gone = GONE_WITHIN
            while time.monotonic() - resumed < GONE_WITHIN:
                if not alive(worker):
                    gone = time.monotonic() - resumed
                    break
                time.sleep(0.005)
            self.gone_after[len(self.faults)] = gone
        return began, resumed, proc.label, f"{len(frozen)} processes for {resumed - began:.3f} s"

    def _node_fault(self, lock: str, mode_name: str) -> tuple[float, float, str, str]:
        proc = self._victim(lock)
        proxy = self.proxies[proc.node]
        if mode_name == "delay":
            mode = delayed(self.rng.uniform(0.01, self.timing.renew_deadline / 6))
            hold = self.timing.ttl * self.rng.uniform(1.0, 2.0)
        else:
            mode = CUT if mode_name == "cut" else BLACKHOLE
            hold = self.timing.ttl * self.rng.uniform(0.3, 2.0)
        began = time.monotonic()
        proxy.set(mode)
        time.sleep(hold)
        proxy.set(PASS)
        cleared = time.monotonic()
        return began, cleared, proc.node, f"{mode} for {cleared - began:.3f} s"

    def _cut_node(self, lock: str) -> tuple[float, float, str, str]:
        return self._node_fault(lock, "cut")

    def _blackhole_node(self, lock: str) -> tuple[float, float, str, str]:
        return self._node_fault(lock, "blackhole")

    def _delay_node(self, lock: str) -> tuple[float, float, str, str]:
        return self._node_fault(lock, "delay")

    def _freeze_backend(self, lock: str) -> tuple[float, float, str, str]:
        assert self.server is not None
        hold = self.timing.ttl * self.rng.uniform(0.2, 2.0)
        began = time.monotonic()
        self.server.freeze()
        time.sleep(max(0.0, began + hold - time.monotonic()))
        self.server.thaw()
        cleared = time.monotonic()
        return began, cleared, "server", f"frozen {cleared - began:.3f} s"

    def _restart_backend(self, lock: str) -> tuple[float, float, str, str]:
        assert self.server is not None
        began = time.monotonic()
        self.server.restart()
        cleared = time.monotonic()
        return began, cleared, "server", f"down {cleared - began:.3f} s"

    def _lock_backend(self, lock: str) -> tuple[float, float, str, str]:
        hold = self.timing.ttl * self.rng.uniform(0.2, 2.0)
        conn = sqlite3.connect(self._sqlite, timeout=STUCK_AFTER, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            began = time.monotonic()
            time.sleep(hold)
            conn.execute("ROLLBACK")
            cleared = time.monotonic()
        finally:
            conn.close()
        return began, cleared, "file", f"write-locked {cleared - began:.3f} s"

    # -- judging -------------------------------------------------------------------------

    def judge(self, ended: float) -> None:
        """Read each lock's whole log once and judge it; then every fault's liveness."""
        marks = {lock: read_marks(self.log(lock)) for lock in self.locks}
        result = self.result
        result.violations.extend(self.problems)
        if self.plan.every and not self.aio:
            self._judge_ticks(marks)
        for lock in self.locks:
            verdict = judge(marks[lock], self.freezes[lock])
            result.judgements[lock] = verdict
            for overlap in verdict.overlaps:
                result.violations.append(
                    Violation(
                        f"overlap on {lock}: token {overlap.older} still worked {overlap.seconds:.3f} s "
                        f"after token {overlap.newer} began",
                        self.where(self._fault_at(self._start_of(verdict, overlap.newer))),
                        excerpt(marks[lock], self._start_of(verdict, overlap.newer)),
                        self._start_of(verdict, overlap.newer),
                    )
                )
            for older, newer in verdict.regressions:
                result.violations.append(
                    Violation(
                        f"token regression on {lock}: {newer} began after {older}",
                        self.where(self._fault_at(self._start_of(verdict, newer))),
                        excerpt(marks[lock], self._start_of(verdict, newer)),
                        self._start_of(verdict, newer),
                    )
                )
            for stale in verdict.stale:
                if stale.window > STALE_LIMIT:
                    result.violations.append(
                        Violation(
                            f"stale work on {lock}: token {stale.older} ran {stale.window:.3f} s "
                            f"after resuming (limit {STALE_LIMIT} s)",
                            self.where(self._fault_at(stale.resumed)),
                            excerpt(marks[lock], stale.resumed),
                            stale.resumed,
                        )
                    )
        for position, fault in enumerate(self.faults):
            end = self.faults[position + 1].started if position + 1 < len(self.faults) else ended
            gaps = {
                lock: longest_gap(result.judgements[lock].witness, fault.reference, end)
                for lock in self.locks
            }
            worst = max(gaps, key=lambda lock: gaps[lock])
            new = sum(
                1
                for lock in self.locks
                for tenure in result.judgements[lock].tenures
                if fault.started <= tenure.start < end
            )
            window = None
            if fault.kind == "freeze_node":
                windows = [
                    s.window for s in result.judgements[fault.lock].stale if s.resumed == fault.cleared
                ]
                window = max(windows) if windows else 0.0
            outcome = Outcome(
                fault=fault,
                gap=gaps[worst],
                gap_lock=worst,
                new_tenures=new,
                stale_window=window,
                worker_gone_after=self.gone_after.get(position),
            )
            result.outcomes.append(outcome)
            if outcome.gap > result.bound:
                result.violations.append(
                    Violation(
                        f"no master on {worst} for {outcome.gap:.3f} s (bound {result.bound:.3f} s)",
                        self.where(fault),
                        f"{fault.detail}; target {fault.target}\n"
                        + excerpt(marks[worst], fault.reference + outcome.gap / 2),
                        fault.reference,
                    )
                )

    def _judge_ticks(self, marks: dict[str, list[dict[str, object]]]) -> None:
        """The scheduled runs of each lock: at most once per tick, none missed while a master
        held the tick's whole window, no ledger write by a demoted master."""
        window = self.timing.ttl + self.timing.heartbeat
        for lock in self.locks:
            runs = read_marks(self.workdir / f"{lock}.runs.jsonl")
            verdict = judge_ticks(runs, marks[lock], period=self.plan.every, window=window)
            self.result.ticks[lock] = verdict
            found = [
                (verdict.duplicates, "ran more than once"),
                (
                    verdict.uncoalesced,
                    "did not run, nor a later tick in its window, though one tenure held it",
                ),
                ([tick for tick, _ in verdict.demoted_writes], "was started by a demoted master"),
            ]
            for ticks, what in found:
                for tick in ticks:
                    near = [run for run in runs if abs(float(str(run.get("tick", 0.0))) - tick) <= 2 * window]
                    evidence = "\n".join(json.dumps(run, sort_keys=True) for run in near)
                    self.result.violations.append(
                        Violation(f"scheduled tick {tick:.3f} of {lock} {what}", self.where(), evidence)
                    )

    def _start_of(self, verdict: Judgement, token: int) -> float:
        return next(t.start for t in verdict.tenures if t.token == token)

    def _fault_at(self, at: float) -> Fault | None:
        """The last fault that began at or before ``at``."""
        return next((f for f in reversed(self.faults) if f.started <= at), None)


def excerpt(marks: list[dict[str, object]], at: float, lines: int = EXCERPT_LINES) -> str:
    """The witness lines nearest ``at``, in time order, as evidence."""
    ordered = sorted(marks, key=lambda mark: float(str(mark.get("t", 0.0))))
    times = [float(str(mark.get("t", 0.0))) for mark in ordered]
    middle = min(range(len(times)), key=lambda i: abs(times[i] - at)) if times else 0
    chosen = ordered[max(0, middle - lines // 2) : middle + lines // 2]
    return "\n".join(json.dumps(mark, sort_keys=True) for mark in chosen)


# ---- a whole backend --------------------------------------------------------------------------


@dataclass
class BackendResult:
    """Every group of one backend."""

    plan: Plan
    groups: list[GroupResult]
    elapsed: float

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for group in self.groups for outcome in group.outcomes]

    @property
    def violations(self) -> list[Violation]:
        return [violation for group in self.groups for violation in group.violations]

    @property
    def overlaps(self) -> int:
        return sum(len(j.overlaps) for g in self.groups for j in g.judgements.values())

    @property
    def regressions(self) -> int:
        return sum(len(j.regressions) for g in self.groups for j in g.judgements.values())

    @property
    def escapees(self) -> int:
        return sum(group.escapees for group in self.groups)

    @property
    def survivors(self) -> int:
        return sum(group.survivors for group in self.groups)

    @property
    def tenures(self) -> int:
        return sum(len(j.tenures) for g in self.groups for j in g.judgements.values())

    @property
    def ticks(self) -> list[TickVerdict]:
        """Every scheduled lock's verdict."""
        return [verdict for group in self.groups for verdict in group.ticks.values()]


def run_backend(plan: Plan, workdir: Path, hub: ProxyHub | None) -> BackendResult:
    """Run ``plan.groups`` groups at once, each in its own thread, and gather what they found."""
    results: list[GroupResult | None] = [None] * plan.groups
    errors: list[BaseException] = []
    booted = threading.Barrier(plan.groups)

    def one(index: int) -> None:
        directory = workdir / f"{plan.backend}-{index}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            results[index] = Group(plan, index, directory, hub, booted).run()
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [
        threading.Thread(target=one, args=(i,), name=f"chaos-{plan.backend}-{i}") for i in range(plan.groups)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    done = [result for result in results if result is not None]
    return BackendResult(plan, done, time.monotonic() - started)
