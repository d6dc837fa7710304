"""Every benchmark in one run, on throwaway servers, collected for ``bench.report``.

A figure that cannot be measured (a server that does not start, a peer that cannot be set to
the same timing) is recorded with the reason instead of stopping the run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.util
import os
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TypeVar

from bench import (
    aio_latency,
    core_throughput,
    failover,
    footprint,
    many_names,
    renewal,
    runtime_latency,
    scale,
)
from bench.aio_latency import InAppLatency
from bench.failover import Round
from bench.footprint import FootprintRun
from bench.many_names import ManyNames
from bench.names_node import Work
from bench.renewal import RenewalCost
from bench.runtime_latency import RuntimeLatency
from bench.scale import ScaleLevel
from bench.servers import Server, Servers, gomaster_backends

_T = TypeVar("_T")
#: The label of the tooz peer's rows in every per-backend table.
TOOZ = "tooz (redis)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How much of everything to run; ``FULL`` is ``make bench``, ``SMOKE`` the test's."""

    backends: tuple[str, ...] | None = None
    core_seconds: float = 1.0
    pipe_messages: int = 500
    forked_elections: int = 200
    spawns: int = 8
    in_app_samples: int = 500
    renewals: int = 500
    crash_ttls: tuple[float, ...] = (1.0, 5.0)
    crash_rounds: tuple[int, ...] = (20, 8)
    graceful_ttl: float = 1.0
    graceful_rounds: int = 50
    peer: bool = True
    peer_crash: bool = True
    scale_backend: str = "mysql"
    scale_levels: tuple[int, ...] = (10, 100, 1000)
    scale_contenders: int = 10
    scale_window: float = 20.0
    scale_ttl: float = 5.0
    settle: float = failover.SETTLE
    footprint_names: tuple[int, ...] = footprint.NAMES
    footprint_before_names: tuple[int, ...] = footprint.BEFORE_NAMES
    footprint_window: float = footprint.WINDOW
    footprint_settle: float = footprint.SETTLE
    footprint_before: str = footprint.BEFORE_REF
    many_backend: str = "mysql"
    many_count: int = many_names.NAMES
    many_followers: int = many_names.FOLLOWERS
    many_duration: float = many_names.DURATION
    many_work: Work = "none"
    many_settle: float = many_names.SETTLE


FULL = Plan()
SMOKE = Plan(
    backends=("sqlite",),
    core_seconds=0.05,
    pipe_messages=20,
    forked_elections=2,
    spawns=1,
    in_app_samples=2,
    renewals=20,
    crash_ttls=(1.0,),
    crash_rounds=(1,),
    graceful_rounds=1,
    peer_crash=False,
    scale_backend="sqlite",
    scale_levels=(4,),
    scale_contenders=2,
    scale_window=1.0,
    scale_ttl=1.0,
    settle=0.3,
    footprint_names=(1,),
    footprint_before_names=(1,),
    footprint_window=0.5,
    footprint_settle=0.5,
    many_backend="sqlite",
    many_count=3,
    many_duration=2.0,
    many_settle=0.5,
)


@dataclass(frozen=True, slots=True)
class Machine:
    """Where and when the run happened."""

    cores: int
    cpu: str
    memory_gib: float
    kernel: str
    python: str
    started: str
    gomaster: str
    tooz: str


@dataclass(slots=True)
class Results:
    """Everything one run measured, plus why anything was not."""

    plan: Plan
    machine: Machine
    servers: dict[str, Server] = field(default_factory=dict)
    core: dict[str, float] = field(default_factory=dict)
    runtime: RuntimeLatency | None = None
    in_app: InAppLatency | None = None
    renewal: dict[str, RenewalCost] = field(default_factory=dict)
    crash: dict[tuple[str, float], list[Round]] = field(default_factory=dict)
    graceful: dict[str, list[Round]] = field(default_factory=dict)
    scale: list[ScaleLevel] = field(default_factory=list)
    footprint: FootprintRun | None = None
    many: ManyNames | None = None
    missing: dict[str, str] = field(default_factory=dict)
    load: dict[str, tuple[float, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> Machine:
    """The facts the report's header needs."""
    return Machine(
        cores=os.cpu_count() or 0,
        cpu=_cpu_model(),
        memory_gib=_memory_gib(),
        kernel=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        started=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        gomaster=_package("gomaster"),
        tooz=_package("tooz"),
    )


class _Runner:
    """Runs one figure at a time, noting its duration, the load around it, and any failure."""

    def __init__(self, results: Results, say: Callable[[str], None]) -> None:
        self.results = results
        self.say = say

    def figure(self, key: str, work: Callable[[], _T]) -> _T | None:
        self.say(f"[bench] {key} ...")
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        try:
            outcome = work()
        except Exception as exc:
            self.results.missing[key] = f"{type(exc).__name__}: {exc}"
            self.say(traceback.format_exc())
            outcome = None
        took = time.monotonic() - started
        self.results.seconds[key] = took
        self.results.load[key] = (load_before, os.getloadavg()[0])
        self.say(f"[bench] {key}: {took:.1f} s")
        return outcome


def _footprint(plan: Plan, results: Results, runner: _Runner) -> None:
    """The footprint on the run's Redis; cells of gomaster (new) it could not measure are
    named among what this run did not measure."""
    if not plan.footprint_names:
        return
    server = results.servers.get("redis")
    if server is None:
        results.missing["footprint"] = "no redis server in this run"
        return
    results.footprint = runner.figure(
        "footprint",
        lambda: footprint.measure(
            server.url,
            names=plan.footprint_names,
            before_names=plan.footprint_before_names,
            window=plan.footprint_window,
            quiet=plan.footprint_settle,
            before_ref=plan.footprint_before,
            say=runner.say,
        ),
    )
    if results.footprint is not None:
        new = [s for s in results.footprint.skipped if s.system == "new"]
        if new:
            results.missing[f"footprint {footprint.label('new')}"] = (
                f"{len(new)} cells, first: {new[0].reason}"
            )


def _many_names(plan: Plan, results: Results, runner: _Runner) -> None:
    """Many names held by one node, on the plan's backend."""
    server = results.servers.get(plan.many_backend)
    if server is None:
        results.missing["many names"] = f"no {plan.many_backend} server in this run"
        return
    results.many = runner.figure(
        "many names",
        lambda: many_names.measure(
            server.url,
            names=plan.many_count,
            followers=plan.many_followers,
            duration=plan.many_duration,
            work=plan.many_work,
            quiet=plan.many_settle,
        ),
    )


def run(plan: Plan, say: Callable[[str], None] = print) -> Results:
    """Measure everything ``plan`` asks for, starting and stopping the servers it needs."""
    started = time.monotonic()
    results = Results(plan=plan, machine=machine())
    runner = _Runner(results, say)
    kinds = [k for k in gomaster_backends() if plan.backends is None or k in plan.backends]
    if plan.peer and importlib.util.find_spec("tooz") is None:
        results.missing[f"graceful {TOOZ}"] = "tooz is not installed: pip install --group bench"
        plan = dataclasses.replace(plan, peer=False)
    # Redis also serves the tooz peer and the footprint, whatever backends the plan names.
    redis = plan.peer or bool(plan.footprint_names)
    with Servers() as servers:
        for kind in [*kinds, *(["redis"] if redis and "redis" not in kinds else [])]:
            server = runner.figure(f"start {kind}", functools.partial(servers.get, kind))
            if server is not None:
                results.servers[kind] = server
        kinds = [k for k in kinds if k in results.servers]
        rates = runner.figure("core", lambda: core_throughput.measure(plan.core_seconds))
        results.core = rates or {}
        results.runtime = runner.figure(
            "runtime",
            lambda: runtime_latency.measure(
                messages=plan.pipe_messages, elections=plan.forked_elections, spawns=plan.spawns
            ),
        )
        results.in_app = runner.figure("in_app", lambda: aio_latency.measure(plan.in_app_samples))
        for kind in kinds:
            url = results.servers[kind].url
            cost = runner.figure(
                f"renewal {kind}", functools.partial(renewal.measure, url, renewals=plan.renewals)
            )
            if cost is not None:
                results.renewal[kind] = cost
        contenders: list[tuple[str, str, failover.Kind]] = [
            (kind, results.servers[kind].url, "gomaster") for kind in kinds
        ]
        if plan.peer and "redis" in results.servers:
            contenders.append((TOOZ, results.servers["redis"].url, "tooz"))
        for ttl, rounds in zip(plan.crash_ttls, plan.crash_rounds, strict=True):
            for label, url, kind in contenders:
                if kind == "tooz" and not plan.peer_crash:
                    continue
                done = runner.figure(
                    f"crash {label} ttl={ttl:g}",
                    functools.partial(
                        failover.measure,
                        url,
                        ttl=ttl,
                        rounds=rounds,
                        mode="crash",
                        kind=kind,
                        settle=plan.settle,
                    ),
                )
                if done is not None:
                    results.crash[(label, ttl)] = done
        for label, url, kind in contenders:
            done = runner.figure(
                f"graceful {label}",
                functools.partial(
                    failover.measure,
                    url,
                    ttl=plan.graceful_ttl,
                    rounds=plan.graceful_rounds,
                    mode="graceful",
                    kind=kind,
                    settle=plan.settle,
                ),
            )
            if done is not None:
                results.graceful[label] = done
        target = results.servers.get(plan.scale_backend)
        if target is None:
            results.missing["scale"] = f"no {plan.scale_backend} server in this run"
        else:
            levels = runner.figure(
                "scale",
                lambda: scale.measure(
                    target.url,
                    levels=list(plan.scale_levels),
                    contenders=plan.scale_contenders,
                    window=plan.scale_window,
                    ttl=plan.scale_ttl,
                    server_pid=target.pid,
                    settle=plan.settle,
                ),
            )
            results.scale = levels or []
        _footprint(plan, results, runner)
        _many_names(plan, results, runner)
    results.total_seconds = time.monotonic() - started
    return results
