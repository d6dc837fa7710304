"""Footprint: the processes, memory (PSS) and CPU of one node carrying 1 to 1,000 lock names.

    python -m bench.footprint --backend redis://127.0.0.1:6379/0 [--names 1,10,100,1000]
                              [--systems new,before,tooz] [--roles following,holding]
                              [--before-names 1,10] [--window 10] [--settle 5]
                              [--before 7d9d93a | --before-path DIR]

Issue 18 asks what a node costs per lock name. Three systems, side by side on the same Redis:

- ``gomaster (new)``: this checkout; one ``supervise({name: target, ...})`` process carries every
  name (``bench.names_node --runtime new``);
- ``gomaster 7d9d93a (before)``: the runtime before issue 18, whose ``supervise`` takes one name,
  so N names are N supervisor processes (``--runtime before``; the process that starts them
  stands in for N service units and is not counted). Its ``gomaster`` package is extracted
  with ``git archive`` from this checkout, or read from ``--before-path``;
- ``tooz``: one process watching every name's election (``bench.tooz_node``), its work in-process.

Each system runs each size in two roles. *following*: another node of the same system already
holds every name (a gomaster holder's targets return at once, so it keeps its names with no
worker and costs the machine little); the measured node follows them all. *holding*: the
measured node holds every name, and each held name runs a target that only sleeps
(``bench.idle``; for tooz, a thread).
A cell waits until the election has settled (every name held by the intended node: read from
the backend for gomaster, from the node's ``elected`` lines for tooz, whose lock does not say
who holds it; a follower has looked at every name, as its log or its ``ready`` line says; and
the measured node's tree unchanged for ``--settle`` seconds), then measures
``--window`` seconds: processes in the measured node's whole tree, the sum of their PSS, and
their CPU time over the window in % of one core (``bench.proctree``). Each gomaster cell uses
a key prefix of its own, each tooz cell group names of its own; every node is stopped
(SIGTERM, then SIGKILL for anything left of its tree) and its keys are deleted before the next.
A size is not run for a system and role whose smaller size, scaled up, would need more than
``MAX_SHARE`` of the machine's cores or memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from bench.launch import Launched, check_home, gomaster_from, node_env, settle, with_option
from bench.names_node import LOGGED_FOLLOWING, Work, describe, is_supervisor, lock_names, not_held
from bench.proctree import CpuWindow, Usage, tree
from bench.tooz_node import SAID_ELECTED, SAID_READY
from gomaster.backends import LockBackend, connect
from gomaster.core.timing import Timing

System: TypeAlias = Literal["new", "before", "tooz"]
Role: TypeAlias = Literal["following", "holding"]
SYSTEMS: tuple[System, ...] = ("new", "before", "tooz")
ROLES: tuple[Role, ...] = ("following", "holding")
NAMES = (1, 10, 100, 1000)
#: Sizes the runtime before issue 18 is run at: it needs one supervisor process, with its zygote
#: and resource tracker (and a worker and a target per held name), per name.
BEFORE_NAMES = (1, 10)
#: Why larger sizes are not run, from one trial at 100 names on the 2-core, 24 GiB development
#: machine (2026-12-04): more than ``SLOW_START`` to settle, and a load average far above the cores.
BEFORE_CAP = (
    "100 names, tried once on the 2-core development machine, took 73 s to settle holding "
    "(500 processes, 5.2 GiB PSS) and drove the 1-minute load average to 95"
)
BEFORE_REF = "7d9d93a"
WINDOW = 10.0
SETTLE = 5.0
#: A node that has not settled this long after its start fails its cell.
START_LIMIT = 300.0
#: A system whose cell took longer than this to settle is not run at larger sizes.
SLOW_START = 60.0
#: A larger size is not run when this size, scaled up, would need more than this share of the
#: machine's cores or memory: the node could not settle, and the machine is shared.
MAX_SHARE = 0.5
#: Keys a cell's cleanup scans and deletes per call to Redis.
_KEYS_PER_CALL = 1000
#: Issue 18's goals: a node following 100 names, and what each held name may add.
GOAL_NAMES = 100
GOAL_PROCESSES = 3
GOAL_PSS_MIB = 60.0
GOAL_CPU_PERCENT = 1.0
GOAL_PROCESSES_PER_HELD = 2.0
GOAL_PSS_MIB_PER_HELD = 3.0


def label(system: System, before_ref: str = BEFORE_REF) -> str:
    """How the report names a system."""
    return {"new": "gomaster (new)", "before": f"gomaster {before_ref} (before)", "tooz": "tooz"}[system]


@dataclass(frozen=True, slots=True)
class Cell:
    """One measured node: its size, role and system, and its tree over the window."""

    system: System
    names: int
    role: Role
    processes: int
    pss_mib: float
    cpu_percent: float
    #: Seconds from the measured node's start until it had settled.
    started_in: float
    #: The 1-minute load average at the end of the window.
    load: float


@dataclass(frozen=True, slots=True)
class Skipped:
    """A cell not measured, and why."""

    system: System
    names: int
    role: Role
    reason: str


@dataclass(slots=True)
class FootprintRun:
    """Every cell of one run, measured or not."""

    before_ref: str
    window: float
    settle: float
    cells: list[Cell] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def cell(self, system: System, names: int, role: Role) -> Cell | None:
        return next((c for c in self.cells if (c.system, c.names, c.role) == (system, names, role)), None)


class _Cell:
    """The nodes of one cell, on their own key prefix (gomaster) or group names (tooz)."""

    def __init__(
        self, system: System, names: int, url: str, home: Path | None, scratch: Path, tag: str
    ) -> None:
        self.system = system
        self.count = names
        self.prefix = f"fp{tag}"
        self.names = lock_names(self.prefix, names)
        self.url = url
        self.gomaster_url = with_option(url, "prefix", self.prefix)
        self.env = node_env(home)
        self.scratch = scratch
        self.nodes: list[Launched] = []
        self.backend: LockBackend | None = connect(self.gomaster_url) if system != "tooz" else None

    def launch(self, who: str, *, work: Work = "sleep") -> Launched:
        if self.system == "tooz":
            ttl = str(round(Timing().ttl))
            command = ["-m", "bench.tooz_node", "--url", self.url, "--node", f"{self.prefix}-{who}"]
            command += ["--ttl", ttl, *(arg for name in self.names for arg in ("--group", name))]
        else:
            command = ["-m", "bench.names_node", "--runtime", self.system, "--backend", self.gomaster_url]
            command += ["--prefix", self.prefix, "--count", str(self.count), "--work", work]
        log = self.scratch / f"{self.prefix}-{who}.log"
        node = Launched([sys.executable, *command], env=self.env, log=log)
        self.nodes.append(node)
        return node

    def missing(self, node: Launched) -> list[str]:
        """The names ``node`` does not hold (for tooz: has not said it won)."""
        if self.backend is None:
            won = node.said(SAID_ELECTED)
            return [] if won == self.count else [f"{won} of them won"]
        return not_held(self.backend, self.names, set(tree(node.pid)), socket.gethostname())

    def holds(self, node: Launched) -> Callable[[], bool]:
        return lambda: not self.missing(node)

    def ready(self, node: Launched) -> Callable[[], bool]:
        """A follower is ready once it has looked at every name: a gomaster one logs whom it
        waits for, once per name; a tooz one says ``ready`` after its first look at them all."""
        if self.system == "tooz":
            return lambda: node.said(SAID_READY) > 0
        return lambda: node.logged(LOGGED_FOLLOWING) >= self.count

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        if self.backend is not None:
            self.backend.close()
            _delete_keys(self.url, f"{self.prefix}:*")


def _delete_keys(url: str, pattern: str) -> None:
    """Delete a finished cell's keys (gomaster's token counters never expire)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=pattern, count=_KEYS_PER_CALL))
        for start in range(0, len(keys), _KEYS_PER_CALL):
            client.delete(*keys[start : start + _KEYS_PER_CALL])
    finally:
        client.close()


def measure_cell(
    system: System,
    names: int,
    role: Role,
    *,
    url: str,
    home: Path | None,
    scratch: Path,
    window: float = WINDOW,
    quiet: float = SETTLE,
    start_limit: float = START_LIMIT,
) -> Cell:
    """Start the cell's nodes, let them settle, measure the measured node over ``window``."""
    tag = f"{secrets.token_hex(4)}{system[0]}{names}{role[0]}"
    cell = _Cell(system, names, url, home, scratch, tag)
    try:
        holder = None
        if role == "following":
            holder = cell.launch("holder", work="none")
            settle(holder, held=cell.holds(holder), quiet=quiet, limit=start_limit, what="the holder")
        measured = cell.launch("measured")
        held = cell.holds(measured) if role == "holding" else cell.ready(measured)
        started_in = settle(measured, held=held, quiet=quiet, limit=start_limit, what="the measured node")
        whole = system == "tooz" or is_supervisor(system, names)
        counted = CpuWindow([measured.pid], include_root=whole)
        counted.open()
        time.sleep(window)
        usage: Usage = counted.close()
        load = os.getloadavg()[0]
        for node in (measured, holder):
            if node is not None:
                node.check()
        owner = holder if holder is not None else measured
        lost = cell.missing(owner)
        if lost:
            raise RuntimeError(f"{describe(lost)} not held by the intended node after the window")
        if holder is not None and system == "tooz" and measured.said(SAID_ELECTED):
            raise RuntimeError("the measured tooz node won a name it should only follow")
        return Cell(system, names, role, usage.processes, usage.pss_mib, usage.cpu_percent, started_in, load)
    finally:
        cell.close()


def measure(
    url: str,
    *,
    names: tuple[int, ...] = NAMES,
    systems: tuple[System, ...] = SYSTEMS,
    roles: tuple[Role, ...] = ROLES,
    before_names: tuple[int, ...] = BEFORE_NAMES,
    window: float = WINDOW,
    quiet: float = SETTLE,
    start_limit: float = START_LIMIT,
    slow_start: float = SLOW_START,
    before_ref: str = BEFORE_REF,
    before_path: Path | None = None,
    say: Callable[[str], None] = print,
) -> FootprintRun:
    """Every cell, size by size (all systems at one size one after another, so they share the
    machine's conditions); a cell that cannot be measured is recorded as skipped, with why."""
    run = FootprintRun(before_ref=before_ref, window=window, settle=quiet)
    with tempfile.TemporaryDirectory(prefix="gomaster-footprint-") as scratch:
        homes: dict[System, Path | None] = {"new": None, "tooz": None, "before": None}
        #: Why a system (in every role: None) or a system in one role is not run any more.
        blocked: dict[tuple[System, Role | None], str] = {}
        if "before" in systems:
            try:
                homes["before"] = (
                    check_home(before_path)
                    if before_path is not None
                    else gomaster_from(before_ref, Path(scratch) / "before")
                )
            except (RuntimeError, OSError) as exc:
                blocked[("before", None)] = f"no gomaster {before_ref} to run: {exc}"
        if "tooz" in systems and importlib.util.find_spec("tooz") is None:
            blocked[("tooz", None)] = "tooz is not installed: pip install --group bench"
        for size in names:
            for role in roles:
                for system in systems:
                    reason = blocked.get((system, None)) or blocked.get((system, role))
                    if reason is None and system == "before" and size not in before_names:
                        reason = (
                            f"not run: {size:,} names are {size:,} supervisor processes, each with its "
                            f"zygote and resource tracker; {BEFORE_CAP}"
                        )
                    if reason is not None:
                        run.skipped.append(Skipped(system, size, role, reason))
                        continue
                    say(f"[footprint] {label(system, before_ref)}, {size} names, {role} ...")
                    try:
                        done = measure_cell(
                            system,
                            size,
                            role,
                            url=url,
                            home=homes[system],
                            scratch=Path(scratch),
                            window=window,
                            quiet=quiet,
                            start_limit=start_limit,
                        )
                    except Exception as exc:
                        run.skipped.append(Skipped(system, size, role, f"{type(exc).__name__}: {exc}"))
                        blocked[(system, None)] = f"not run: {plural(size)} failed ({type(exc).__name__})"
                        say(f"[footprint]   failed: {exc}")
                        continue
                    run.cells.append(done)
                    say(f"[footprint]   {_line(done, before_ref)}")
                    if done.started_in > slow_start:
                        blocked[(system, None)] = (
                            f"not run: {plural(size)} took {done.started_in:.0f} s to settle "
                            f"(more than {slow_start:g} s)"
                        )
                    larger = [n for n in names if n > size]
                    too_much = _too_much(done, min(larger)) if larger else None
                    if too_much is not None:
                        blocked[(system, role)] = too_much
    return run


def _too_much(cell: Cell, size: int) -> str | None:
    """Why ``cell``'s node scaled to ``size`` names would not fit this machine, if it would not."""
    cores = os.cpu_count() or 1
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    cpu = cell.cpu_percent / cell.names * size
    pss = cell.pss_mib / cell.names * size
    if cpu <= MAX_SHARE * cores * 100 and pss <= MAX_SHARE * memory_mib:
        return None
    return (
        f"not run: {plural(cell.names)} {cell.role} took {cell.cpu_percent:.1f} % of a core and "
        f"{cell.pss_mib:.0f} MiB, so {plural(size)} would need about {cpu:.0f} % and {pss:,.0f} MiB, "
        f"more than {MAX_SHARE:.0%} of this machine ({cores} cores, {memory_mib / 1024:.0f} GiB)"
    )


def plural(names: int) -> str:
    """``1 name``, ``1,000 names``."""
    return f"{names:,} name" if names == 1 else f"{names:,} names"


def _line(cell: Cell, before_ref: str) -> str:
    return (
        f"{cell.names:>5} {cell.role:<9} {label(cell.system, before_ref):<26} "
        f"{cell.processes:>5} processes {cell.pss_mib:9.1f} MiB PSS {cell.cpu_percent:7.2f} % CPU "
        f"(settled in {cell.started_in:.1f} s, load {cell.load:.2f})"
    )


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",") if n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.footprint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", required=True, help="a Redis URL (tooz needs Redis)")
    parser.add_argument("--names", default=",".join(map(str, NAMES)))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--roles", default=",".join(ROLES))
    parser.add_argument("--before-names", default=",".join(map(str, BEFORE_NAMES)))
    parser.add_argument("--window", type=float, default=WINDOW)
    parser.add_argument("--settle", type=float, default=SETTLE, help="tree unchanged this long first (s)")
    parser.add_argument("--start-limit", type=float, default=START_LIMIT)
    parser.add_argument("--slow-start", type=float, default=SLOW_START)
    parser.add_argument("--before", default=BEFORE_REF, help="the commit of the runtime before")
    parser.add_argument("--before-path", type=Path, help="a directory holding that gomaster package")
    args = parser.parse_args(argv)
    systems = tuple(s for s in SYSTEMS if s in args.systems.split(","))
    roles = tuple(r for r in ROLES if r in args.roles.split(","))
    run = measure(
        args.backend,
        names=_sizes(args.names),
        systems=systems,
        roles=roles,
        before_names=_sizes(args.before_names),
        window=args.window,
        quiet=args.settle,
        start_limit=args.start_limit,
        slow_start=args.slow_start,
        before_ref=args.before,
        before_path=args.before_path,
        say=lambda text: print(text, flush=True),
    )
    print(f"cores {os.cpu_count()}, load average now {os.getloadavg()[0]:.2f}")
    for cell in run.cells:
        print(_line(cell, run.before_ref))
    for skipped in run.skipped:
        who = label(skipped.system, run.before_ref)
        print(f"{skipped.names:>5} {skipped.role:<9} {who:<26} {skipped.reason}")


if __name__ == "__main__":
    main()
