"""``make chaos-replicated BACKEND=...``: the primary of a replicated store failed over under a
running election, round after round, and what that did to the lease.

    python -m tests.chaos.failover --backend redis --sync 100 --async 50 --out docs/failover/redis.md

One group (:class:`FailoverGroup`, a :class:`tests.chaos.harness.Group`) per replication mode:
``NODES`` nodes, each one supervisor carrying ``LOCKS`` names, every node's URL listing both
servers (or the sentinels) of a :mod:`tests.chaos.clusters` cluster. Each round waits until
every name has a master at work, then kills the primary with SIGKILL, promotes the replica and
builds a new replica; the liveness clock starts when the store takes writes again. Rounds
alternate in a seeded order between ``failover`` (the kill at a random part of a heartbeat: a
random moment of the master's renewal cycle) and ``handover_failover`` (a master stopped
gracefully first, so a follower claims at once, and the kill within ``HANDOVER_WINDOW`` of
the successor's first mark: a failover that lands on a fresh claim, which asynchronous
replication may lose).

The judge splits each lock's witness log into tenures by their ``start`` marks rather than by
token, so a token handed out twice shows as two tenures: it counts overlaps (two tenures at work
at once), token regressions (a tenure that began with a lower token than the one before) and
repeated tokens. For each overlap it says whether the newer tenure's token is higher, i.e.
whether a store that checks fencing tokens would reject the older master's writes.

With ``sync`` settings the bar is 0 overlaps, 0 regressions and 0 repeated tokens (exit status 1
otherwise); with ``async`` ones the figures are published as they come.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gomaster.testing import MARKS, read_marks
from tests.chaos.clusters import LAG, MODES, Cluster, start_cluster
from tests.chaos.harness import POLL, STARTUP, Group, GroupResult, Plan, Violation, liveness_bound
from tests.chaos.proxy import ProxyHub
from tests.chaos.run import LoadSampler, heading

BACKENDS = ("postgresql", "mysql", "redis")
NODES = 3
LOCKS = 2
DEFAULT_TTL = 2.0
#: Each name also runs a job this often (seconds), so the run ledger goes through the failovers.
EVERY = 1.0
#: The round kinds, alternating: a failover at a random moment of the renewal cycle, and one
#: at a random moment after a master's graceful stop, when its successor has just claimed.
KINDS = ("failover", "handover_failover")
#: How long after the successor's work began the primary may be killed: about twice the
#: replication lag, so that its claim may or may not have reached the replica.
HANDOVER_WINDOW = 0.1
#: How long a gracefully stopped node may take to exit before it is killed.
STOP_WITHIN = 10.0


@dataclass(frozen=True, slots=True)
class Span:
    """One tenure as its own ``start`` mark begins it: a repeated token makes two."""

    token: int
    node: str
    start: float
    end: float


def spans(marks: Iterable[dict[str, object]]) -> list[Span]:
    """The tenures of one lock's witness log, in start order, each begun by a ``start`` mark
    (marks of the same process and token until its next ``start`` belong to it)."""
    found: list[Span] = []
    current: dict[tuple[int, str], int] = {}
    for mark in marks:
        token, event = mark.get("token"), mark.get("event")
        if event not in MARKS or not isinstance(token, int):
            continue
        key, at = (token, str(mark.get("node", ""))), float(str(mark["t"]))
        if event == "start" or key not in current:
            current[key] = len(found)
            found.append(Span(token, key[1], at, at))
        else:
            seen = found[current[key]]
            found[current[key]] = replace(seen, start=min(seen.start, at), end=max(seen.end, at))
    return sorted(found, key=lambda span: span.start)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one lock's log shows across the failovers."""

    tenures: int
    #: (older, newer, seconds at work together)
    overlaps: list[tuple[Span, Span, float]]
    regressions: list[tuple[Span, Span]]
    repeated: list[int]

    @property
    def fenced(self) -> int:
        """Overlaps in which the newer tenure's token is higher: a store that checks fencing
        tokens rejects the older master's writes once the newer one has written."""
        return sum(1 for older, newer, _ in self.overlaps if newer.token > older.token)


def verdict(history: list[Span]) -> Verdict:
    """Overlaps, regressions and repeated tokens of one lock's tenures."""
    overlaps = [(a, b, a.end - b.start) for a, b in itertools.combinations(history, 2) if b.start < a.end]
    regressions = [(a, b) for a, b in itertools.pairwise(history) if b.token < a.token]
    counts: dict[int, int] = {}
    for span in history:
        counts[span.token] = counts.get(span.token, 0) + 1
    return Verdict(len(history), overlaps, regressions, sorted(t for t, n in counts.items() if n > 1))


@dataclass
class FailoverResult:
    """One backend in one replication mode."""

    backend: str
    mode: str
    ttl: float
    lag: float
    group: GroupResult
    verdicts: dict[str, Verdict]
    promotions: list[float]
    rebuilds: list[float]
    load: str
    elapsed: float
    harness_errors: list[Violation] = field(default_factory=list)

    def count(self, what: str) -> int:
        """Overlaps, regressions or repeated tokens over every lock."""
        return sum(len(getattr(v, what)) for v in self.verdicts.values())

    def ticks(self, what: str) -> int:
        """Scheduled ticks run twice (``duplicates``), started by a demoted master
        (``demoted_writes``) or missed with none later in the window (``uncoalesced``)."""
        return sum(len(getattr(v, what)) for v in self.group.ticks.values())

    @property
    def broken(self) -> bool:
        """Whether the bar of ``sync`` settings broke (or the harness failed)."""
        unsafe = self.count("overlaps") + self.count("regressions") + self.count("repeated")
        unsafe += self.ticks("duplicates") + self.ticks("demoted_writes")
        return bool(self.harness_errors) or (self.mode == "sync" and unsafe > 0)


class FailoverGroup(Group):
    """A :class:`Group` whose one fault is the failover of its store's primary."""

    def __init__(self, plan: Plan, mode: str, workdir: Path, hub: ProxyHub, lag: float) -> None:
        super().__init__(plan, 0, workdir, None)
        self.mode, self.link_hub, self.lag = mode, hub, lag
        self.seed = f"{plan.seed}:{plan.backend}:{mode}"
        self.rng = random.Random(self.seed)
        self.cluster: Cluster | None = None
        self.promotions: list[float] = []
        self.rebuilds: list[float] = []

    def url_for(self, node: str) -> str:
        assert self.cluster is not None
        return self.cluster.url

    def start(self) -> None:
        self.cluster = start_cluster(self.plan.backend, self.mode, self.link_hub, self.lag)
        for node in self.nodes:
            for locks in self.seats():
                self.spawn(node, locks)
        if not self.wait_masters(STARTUP, time.monotonic()):
            raise RuntimeError(f"{self.where()}: no master on every lock within {STARTUP} s")

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def _failover(self, lock: str) -> tuple[float, float, str, str]:
        """Kill the primary at a random moment of the renewal cycle, promote, rebuild."""
        time.sleep(self.rng.uniform(0.0, self.timing.heartbeat))
        return self._fail_over()

    def _handover_failover(self, lock: str) -> tuple[float, float, str, str]:
        """Stop ``lock``'s master gracefully (it releases, and a follower claims at once), then
        kill the primary a random moment later, so that the failover lands on a fresh claim."""
        proc = self._victim(lock)
        proc.killed = True  # on purpose: replaced below, not a finding
        before = self.tails[lock].token
        proc.popen.terminate()
        deadline = time.monotonic() + STOP_WITHIN
        while self.tails[lock].token == before and time.monotonic() < deadline:
            time.sleep(POLL)  # until the successor's work has begun: its claim is committed
            self.poll()
        time.sleep(self.rng.uniform(0.0, HANDOVER_WINDOW))
        began, cleared, target, detail = self._fail_over()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(STOP_WITHIN)
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()
        self.retired.append(proc)
        self.spawn(proc.node, proc.locks)
        return began, cleared, target, f"{proc.label} stopped, then {detail}"

    def _fail_over(self) -> tuple[float, float, str, str]:
        cluster = self.cluster
        assert cluster is not None
        began = time.monotonic()
        cluster.kill_primary()
        cluster.promote()
        promoted = time.monotonic()
        cluster.rebuild()
        rebuilt = time.monotonic()
        self.promotions.append(promoted - began)
        self.rebuilds.append(rebuilt - promoted)
        cleared = promoted if cluster.writable_before_rebuild else rebuilt
        return (
            began,
            cleared,
            "primary",
            f"promoted in {promoted - began:.3f} s, rebuilt in {rebuilt - promoted:.3f} s",
        )

    def judge(self, ended: float) -> None:
        """Liveness as every group judges it; safety by :func:`spans` instead of by token."""
        super().judge(ended)
        kept = [
            v for v in self.result.violations if not v.what.startswith(("overlap on", "token regression on"))
        ]
        self.result.violations[:] = kept


def run(
    backend: str, mode: str, failovers: int, *, ttl: float, seed: int, workdir: Path, lag: float = LAG
) -> FailoverResult:
    """``failovers`` rounds on ``backend`` replicated in ``mode``, the replica ``lag`` seconds
    (each way) from its primary."""
    plan = Plan(
        backend=backend,
        faults=failovers,
        nodes=NODES,
        locks=LOCKS,
        ttl=ttl,
        seed=seed,
        kinds=KINDS,
        every=EVERY,
    )
    directory = workdir / f"{backend}-{mode}"
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ProxyHub() as hub, LoadSampler() as load:
        group = FailoverGroup(plan, mode, directory, hub, lag)
        result = group.run()
    verdicts = {lock: verdict(spans(read_marks(group.log(lock)))) for lock in group.locks}
    errors = [v for v in result.violations if v.what in ("harness error", "node exited by itself")]
    elapsed = time.monotonic() - started
    return FailoverResult(
        backend=backend,
        mode=mode,
        ttl=ttl,
        lag=lag,
        group=result,
        verdicts=verdicts,
        promotions=group.promotions,
        rebuilds=group.rebuilds,
        load=load.describe(),
        elapsed=elapsed,
        harness_errors=errors,
    )


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def _max(values: Sequence[float]) -> str:
    return f"{max(values):.2f}" if values else "-"


def _after(result: FailoverResult, at: float) -> str:
    """Which round's failover came last before ``at``, and how long before."""
    faults = [o.fault for o in result.group.outcomes if o.fault.started <= at]
    if not faults:
        return "before any failover"
    fault = faults[-1]
    return f"{at - fault.started:.3f} s after the kill of round {fault.index} ({fault.kind})"


def report(results: list[FailoverResult], command: str) -> str:
    """The page ``docs/failover/<backend>.md``."""
    backend = results[0].backend
    timing = Plan(backend=backend, faults=0, ttl=results[0].ttl).timing
    lines = [
        *heading(f"Failover runs: {backend}", "make chaos-replicated", __file__, command),
        f"{NODES} nodes, each one supervisor carrying {LOCKS} lock names, every node's URL listing both "
        "servers (or the three sentinels). Each round waits until every name has a master at work, then "
        "either waits a random part of a heartbeat (`failover`: a random moment of the renewal cycle) or "
        "stops one master gracefully, so that a follower claims at once, and once the successor is at "
        f"work waits a random moment of the next {HANDOVER_WINDOW:g} s (`handover_failover`: the "
        "failover lands on a fresh claim); "
        "then it kills the primary with SIGKILL, promotes the replica (the harness "
        "does, as an operator would; Sentinel does for Redis) and builds a fresh replica of the new "
        "primary on the dead one's port (tests/chaos/clusters.py says how, per backend and mode). "
        f"The replica reaches its primary through a proxy that delays every chunk by "
        f"{results[0].lag * 1000:g} ms each way, as a replica in another zone would. "
        f"`Timing.from_ttl({timing.ttl:g})`; the liveness clock starts when the store takes lease writes "
        f"again and the bound is ttl + 2 * heartbeat = {liveness_bound(timing):.3f} s.",
        "",
        "Tenures are told apart by their start marks, not by token, so a token handed out twice shows "
        "as two tenures. An overlap is two tenures at work at once; *fenced* counts those in which the "
        "newer tenure's token is higher, so a store that checks fencing tokens rejects the older "
        "master's writes once the newer one has written. Each name also runs a job every "
        f"{EVERY:g} s (`every()`), so its run ledger goes through the failovers too: a tick run twice "
        "is one whose start the failover lost.",
        "",
        "| mode | failovers | run time | tenures | overlaps (fenced) | token regressions | repeated tokens "
        "| ticks run / twice / by a demoted master | promotion s median / max | rebuild s median / max "
        "| worst time without master (s) | over the bound | load avg median / max | verdict |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for result in results:
        outcomes = result.group.outcomes
        fenced = sum(v.fenced for v in result.verdicts.values())
        worst = max((o.gap for o in outcomes), default=None)
        over = sum(1 for o in outcomes if o.gap > result.group.bound)
        bar = "kept" if not result.broken else "BROKEN"
        if result.mode == "async":
            bar = "published" if not result.harness_errors else "harness error"
        lines.append(
            f"| {result.mode} | {len(outcomes)} | {result.elapsed / 60:.1f} min "
            f"| {sum(v.tenures for v in result.verdicts.values())} "
            f"| {result.count('overlaps')} ({fenced}) | {result.count('regressions')} "
            f"| {result.count('repeated')} "
            f"| {sum(v.ticks for v in result.group.ticks.values())} / {result.ticks('duplicates')} "
            f"/ {result.ticks('demoted_writes')} "
            f"| {_median(result.promotions)} / {_max(result.promotions)} "
            f"| {_median(result.rebuilds)} / {_max(result.rebuilds)} "
            f"| {'-' if worst is None else f'{worst:.3f}'} | {over} | {result.load} | {bar} |"
        )
    lines += ["", "## What broke", ""]
    quoted = 0
    for result in results:
        for lock, found in result.verdicts.items():
            for older, newer, seconds in found.overlaps[:4]:
                quoted += 1
                lines.append(
                    f"- {result.mode}, {lock}: token {older.token} ({older.node}) still at work "
                    f"{seconds:.3f} s after token {newer.token} ({newer.node}) began, "
                    f"{_after(result, newer.start)}"
                )
            for token in found.repeated[:4]:
                quoted += 1
                lines.append(f"- {result.mode}, {lock}: token {token} handed out to more than one tenure")
        for violation in [*result.harness_errors, *result.group.violations][:6]:
            quoted += 1
            last = violation.evidence.strip().splitlines()[-1:] if violation.what == "harness error" else []
            lines.append(
                f"- {result.mode}: {violation.what} ({violation.where}){''.join(f': {e}' for e in last)}"
            )
    if not quoted:
        lines.append("Nothing.")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--sync", type=int, default=100, help="failovers with synchronous settings")
    parser.add_argument(
        "--async", dest="async_", type=int, default=50, help="failovers with asynchronous ones"
    )
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL)
    parser.add_argument("--lag", type=float, default=LAG, help="seconds each way on the replication link")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    command = "python -m tests.chaos.failover " + " ".join(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="gomaster-failover-"))
    results: list[FailoverResult] = []
    for mode, failovers in zip(MODES, (args.sync, args.async_), strict=True):
        if failovers <= 0:
            continue
        result = run(
            args.backend, mode, failovers, ttl=args.ttl, seed=args.seed, workdir=workdir, lag=args.lag
        )
        results.append(result)
        print(
            f"{args.backend} {mode}: {len(result.group.outcomes)} failovers in {result.elapsed:.0f} s, "
            f"{result.count('overlaps')} overlaps, {result.count('regressions')} regressions, "
            f"{result.count('repeated')} repeated tokens, {len(result.harness_errors)} harness errors",
            flush=True,
        )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report(results, command))
    broken = any(result.broken for result in results)
    if broken:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
