"""``make chaos``: many faults on every backend, and the report ``docs/reliability.md``.

    python -m tests.chaos.run --backends sqlite,mysql,mongodb --faults 1000 --out docs/reliability.md

Backends run one after another; each runs ``--groups`` independent groups at once (own server,
5 nodes, 3 lock names carried by each node's one supervisor), sharing its ``--faults`` among
them; the last ``--aio-groups`` of them run asyncio applications (``gomaster.aio``) instead.
The exit status is 1 when any guarantee broke (the report then lists each violation with its
seed and a witness log excerpt), else 0.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from gomaster.testing import STALE_LIMIT
from tests.chaos.harness import (
    ALL_KINDS,
    BACKENDS,
    BOOT_TTLS,
    ROOT,
    SETTLE_TTLS,
    STOP,
    BackendResult,
    Plan,
    kinds_for,
    liveness_bound,
    run_backend,
)
from tests.chaos.proxy import ProxyHub

DEFAULT_FAULTS = 1000
DEFAULT_GROUPS = 4
DEFAULT_AIO_GROUPS = 1
DEFAULT_TTL = 1.0
#: Each lock of the process groups also runs a job this often (seconds), per the schedule bar.
DEFAULT_EVERY = 1.0
#: Violations quoted in full per backend; the rest are counted.
QUOTED = 8
#: How often the machine's load average is sampled while a backend runs.
LOAD_EVERY = 5.0


class LoadSampler:
    """Samples the 1-minute load average in the background: timing faults mean little on a machine
    that other work keeps busy, so the report says how busy it was."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.times.append(time.monotonic())
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(LOAD_EVERY):
                return

    def at(self, moment: float) -> float | None:
        """The 1-minute load average sampled nearest ``moment`` (``CLOCK_MONOTONIC``)."""
        if not self.times:
            return None
        nearest = min(range(len(self.times)), key=lambda i: abs(self.times[i] - moment))
        return self.samples[nearest]

    def describe(self) -> str:
        """Median and maximum of the samples."""
        if not self.samples:
            return "-"
        return f"{statistics.median(self.samples):.1f} / {max(self.samples):.1f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _worst(values: Sequence[float]) -> float | None:
    return max(values) if values else None


def summary_rows(results: list[BackendResult], loads: list[LoadSampler]) -> list[str]:
    """One line per backend: the bar, and the figures behind it."""
    rows = [
        "| backend | faults | tenures | overlaps | token regressions | worst stale window (s) "
        "| freezes with stale marks | worst time without master (s) | faults over the bound "
        "| frozen work gone after SIGCONT (s) | delay faults that changed master "
        "| escapees started / survivors | blocked loops ended by guard / by supervisor / of "
        "| run time | load avg median / max |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for result, load in zip(results, loads, strict=True):
        outcomes = result.outcomes
        bound = liveness_bound(result.plan.timing)
        freezes = [o for o in outcomes if o.fault.kind == "freeze_node"]
        stale = [o.stale_window for o in freezes if o.stale_window]
        delays = [o for o in outcomes if o.fault.kind == "delay_node"]
        blocked = [o.fault.detail for o in outcomes if o.fault.kind == "block_loop"]
        ended = (
            f"{sum('by its guard' in d for d in blocked)} / {sum('by its supervisor' in d for d in blocked)} "
            f"/ {len(blocked)}"
            if blocked
            else "-"
        )
        rows.append(
            f"| {result.plan.backend} | {len(outcomes)} | {result.tenures} | {result.overlaps} "
            f"| {result.regressions} | {_seconds(_worst(stale) if stale else 0.0 if freezes else None)} "
            f"| {len(stale)} of {len(freezes)} | {_seconds(_worst([o.gap for o in outcomes]))} "
            f"| {sum(1 for o in outcomes if o.gap > bound)} "
            f"| {_seconds(_worst([o.worker_gone_after for o in freezes if o.worker_gone_after]))} "
            f"| {sum(1 for o in delays if o.new_tenures) if delays else '-'} "
            f"| {result.escapees} / {result.survivors} | {ended} "
            f"| {result.elapsed / 60:.1f} min | {load.describe()} |"
        )
    return rows


def _kinds_of(plan: Plan) -> tuple[str, ...]:
    """Every kind some group of ``plan`` applies."""
    return (*kinds_for(plan.backend), *(kinds_for(plan.backend, True) if plan.aio_groups else ()))


def kind_rows(results: list[BackendResult]) -> list[str]:
    """Faults per kind, and the worst time without a master after each kind; the groups of
    asyncio applications on a row of their own."""
    kinds = [k for k in ALL_KINDS if any(k in _kinds_of(r.plan) for r in results)]
    rows = [
        "| backend | " + " | ".join(kinds) + " |",
        "|---|" + "--:|" * len(kinds),
    ]
    for result in results:
        for aio in (False, True) if result.plan.aio_groups else (False,):
            mine = [o for o in result.outcomes if result.plan.is_aio(o.fault.group) == aio]
            cells = []
            for kind in kinds:
                done = [o for o in mine if o.fault.kind == kind]
                if not done:
                    cells.append("-")
                    continue
                over = sum(1 for o in done if o.gap > liveness_bound(result.plan.timing))
                cells.append(f"{len(done)} / {max(o.gap for o in done):.3f} s / {over}")
            label = f"{result.plan.backend} (asyncio)" if aio else result.plan.backend
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def tick_rows(results: list[BackendResult]) -> list[str]:
    """The scheduled names of the process groups, per backend (see tests/chaos/ticks.py)."""
    rows = [
        "| backend | ticks run | runs started | ticks run twice | ticks missed while held (folded into "
        "a later one) | ticks missed, none later in the window | started by a demoted master |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        verdicts = result.ticks
        if not verdicts:
            continue
        missed = sum(len(v.missed) for v in verdicts)
        uncoalesced = sum(len(v.uncoalesced) for v in verdicts)
        twice = sum(len(v.duplicates) for v in verdicts)
        demoted = sum(len(v.demoted_writes) for v in verdicts)
        rows.append(
            f"| {result.plan.backend} | {sum(v.ticks for v in verdicts)} | {sum(v.runs for v in verdicts)} "
            f"| {twice} | {missed} ({missed - uncoalesced}) | {uncoalesced} | {demoted} |"
        )
    return rows


def heading(title: str, target: str, source: str, command: str) -> list[str]:
    """The head of a generated page: its title, what writes it, and when, where and how it ran."""
    return [
        f"# {title}",
        "",
        f"<!-- Generated by `{target}` ({Path(source).relative_to(ROOT)}); do not edit by hand. -->",
        "",
        f"Generated {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, by:",
        "",
        f"    {command}",
        "",
    ]


def report(results: list[BackendResult], loads: list[LoadSampler], command: str, elapsed: float) -> str:
    """The whole of ``docs/reliability.md``."""
    plan = results[0].plan
    timing = plan.timing
    bound = liveness_bound(timing)
    violations = [v for r in results for v in r.violations]
    lines = [
        *heading("Reliability: fault injection on every backend", "make chaos", __file__, command),
        f"Total run time: **{elapsed / 60:.1f} min** for {sum(len(r.outcomes) for r in results)} faults.",
        "",
        "## The bar",
        "",
        "- **0 overlapping tenures** per lock: no two tokens' work witnessed at once, except the fenced",
        "  marks of a master frozen past its lease (counted separately, below).",
        "- **0 token regressions**: tokens strictly increase in the order tenures began.",
        f"- **Stale window ≤ {STALE_LIMIT} s**: a master SIGSTOPped past its lease stops its work within",
        f"  {STALE_LIMIT} s of SIGCONT; until then only its older token shows (a fencing store rejects it).",
        f"- **Liveness ≤ ttl + 2 * heartbeat = {bound:.3f} s** without a master after every fault.",
        "",
        f"Verdict: **{'PASS' if not violations else f'FAIL, {len(violations)} violations (listed below)'}**.",
        "",
        "## Set-up",
        "",
        f"- `Timing.from_ttl({timing.ttl:g})`: ttl {timing.ttl:g} s, heartbeat {timing.heartbeat:g} s, "
        f"renew_deadline {timing.renew_deadline:g} s, retry {timing.retry:g} s, grace {timing.grace:g} s, "
        f"safety margin {timing.safety_margin:.3f} s.",
        f"- Per backend, {plan.groups} groups run at once; each has its own throwaway server (or SQLite "
        f"file), {plan.nodes} nodes and {plan.locks} lock names, "
        + (
            f"each node one supervisor carrying every name (`python -m tests.chaos.node`), so {plan.nodes} "
            "supervisors, each with its zygote and the workers of the names it masters. "
            if plan.packed
            else f"so {plan.nodes * plan.locks} supervisors (one per node and lock), each with its workers. "
        )
        + "Each node reaches the server "
        "through its own fault proxy port (tests/chaos/proxy.py).",
        f"- {plan.aio_groups} of the {plan.groups} groups per backend run asyncio applications instead "
        "(`python -m tests.chaos.node --aio`): each name a `gomaster.aio.Master` whose work is a task in "
        "the node's event loop, its election in that Master's supervisor child, under the default policy "
        "(`overrun='kill'`). Their work starts no escapees (children of in-process work are not "
        "contained: docs/asyncio.md). Their node kinds are kill_app, kill_supervisor (the name's "
        "supervisor child alone), freeze_node, stop_supervisor (SIGSTOP of that child alone for 1.2-1.8 "
        "ttl) and block_loop (the task blocks the loop with a sync `time.sleep` loop that goes on writing "
        "marks for 3 ttl while the node loses its lease: its proxy cut for 1-1.5 ttl, on SQLite its "
        "supervisor stopped; the application must be ended, by its guard thread with exit 70 or by its "
        "supervisor with SIGKILL, before another node is master).",
        f"- Faults come one at a time per group, in a seeded order (seed {plan.seed}; group *g* of backend "
        "*b* uses `random.Random('seed:b:g')`), every kind once per round; the target is the master of a "
        "random lock of the group. Before each fault the group waits until every lock has a master at "
        f"work again, at least {SETTLE_TTLS:g} ttl after the previous fault cleared, and {BOOT_TTLS:g} ttl "
        "after its newest node process started (at the start, once every group of the backend has "
        "booted, and after a supervisor was killed and replaced), so that no fault lands on a node "
        "that is still booting.",
        "- The only evidence is the witness log each master's work appends (start/alive marks every "
        "50 ms with `CLOCK_MONOTONIC`), judged by `gomaster.testing.judge`. Times without a master are "
        "therefore upper bounds, accurate to one mark interval (50 ms).",
        "- The machine may be shared with other work. Timing faults mean little on starved CPUs, so the "
        "summary gives the 1-minute load average (median / max) while each backend ran, and every quoted "
        "violation the load average at its time. Safety (overlaps, tokens, stale windows) must hold "
        "whatever the load; liveness is a time bound and degrades with it.",
        "",
        "## Summary",
        "",
        *summary_rows(results, loads),
        "",
        "The stale window is the time from SIGCONT to the frozen master's last mark under its old token "
        'written after the new tenure began; freezes with none count 0. "Frozen work gone" is the '
        "harness's own check (polling /proc every 5 ms) of when the frozen work process had exited. "
        "A delay fault that changed master "
        "is one after which a new tenure began on any lock before the next fault (expected 0: the delay "
        "stays below renew_deadline / 6 each way).",
        "",
        "## Faults by kind: count / worst time without a master / faults over the bound",
        "",
        *kind_rows(results),
        "",
        "Where the liveness clock starts: at the fault for node faults (kill_supervisor, kill_worker, "
        "freeze_node, cut_node, blackhole_node, delay_node, kill_app, stop_supervisor, block_loop: the other "
        "nodes still reach the backend), and "
        "when the fault clears for backend faults (freeze_backend, restart_backend, lock_backend: nobody "
        "can be master meanwhile). It runs until the next fault of the group. SQLite has no server or "
        "socket; its backend fault is another process holding the file's write lock.",
        "",
        *(
            [
                "## Scheduled names: one run per tick",
                "",
                f"Every lock of the process groups also runs a job every {plan.every:g} s (`every()`'s "
                "target beside the witness work, `tests.chaos.node --every`), which appends a mark for each "
                "run it starts. The bar: no tick runs twice; no tick goes without a run (of itself, or of a "
                'later tick that folded it in, as `missed="latest"` does) while one tenure held the lock '
                "through `[tick, tick + ttl + heartbeat]` with its witness never pausing over 0.3 s; no run "
                "started by a demoted master (tokens never go down in tick order).",
                "",
                *tick_rows(results),
                "",
            ]
            if plan.every
            else []
        ),
        "## Failover of replicated stores",
        "",
        "`make chaos-replicated BACKEND=postgresql|mysql|redis` fails the primary of a replicated store "
        "over under a running election, 100 times with synchronous replication settings and 50 with "
        "asynchronous ones (tests/chaos/failover.py). Its figures, and the time each run took, are on "
        "pages of their own that it writes: [PostgreSQL](failover/postgresql.md), "
        "[MySQL/MariaDB](failover/mysql.md), [Redis](failover/redis.md); "
        "[Replicated backends](replicated.md) sums them up.",
        "",
        "## Violations",
        "",
    ]
    if not violations:
        lines.append("None.")
    for result, load in zip(results, loads, strict=True):
        found = result.violations
        for violation in found[:QUOTED]:
            then = load.at(violation.at)
            context = "" if then is None else f"; 1-minute load average then: {then:.1f}"
            lines += [f"### {violation.what}", "", f"{violation.where}{context}", ""]
            lines += ["```", violation.evidence, "```", ""]
        if len(found) > QUOTED:
            loaded = [load.at(v.at) for v in found]
            busy = sum(1 for value in loaded if value is not None and value > 2 * (os.cpu_count() or 1))
            lines += [
                f"... and {len(found) - QUOTED} more on {result.plan.backend} (rerun with the same seed "
                f"to see them); {busy} of its {len(found)} came while the 1-minute load average was "
                "above twice the CPU count.",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The arguments, and the backends to run, checked."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--faults", type=int, default=DEFAULT_FAULTS, help="faults per backend")
    parser.add_argument("--groups", type=int, default=DEFAULT_GROUPS, help="groups at once per backend")
    parser.add_argument(
        "--aio-groups", type=int, default=DEFAULT_AIO_GROUPS, help="of those, groups of asyncio applications"
    )
    parser.add_argument("--ttl", type=float, default=DEFAULT_TTL)
    parser.add_argument(
        "--every", type=float, default=DEFAULT_EVERY, help="period of each lock's scheduled job (0: none)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/reliability.md"))
    parser.add_argument("--keep", action="store_true", help="keep the logs (kept anyway on violations)")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    if not 0 <= args.aio_groups <= args.groups:
        parser.error(f"--aio-groups must be between 0 and --groups ({args.groups}), not {args.aio_groups}")
    return args, backends


def main(argv: Sequence[str] | None = None) -> int:
    args, backends = _parse(argv)
    command = "python -m tests.chaos.run " + " ".join(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="gomaster-chaos-"))
    results: list[BackendResult] = []
    loads: list[LoadSampler] = []
    started = time.monotonic()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: STOP.set())
    with ProxyHub() as hub:
        for backend in backends:
            if STOP.is_set():
                break
            plan = Plan(
                backend=backend,
                faults=args.faults,
                groups=args.groups,
                ttl=args.ttl,
                seed=args.seed,
                aio_groups=args.aio_groups,
                every=args.every,
            )
            with LoadSampler() as load:
                result = run_backend(plan, workdir, hub)
            results.append(result)
            loads.append(load)
            # Written after every backend, so a long run that is cut short still leaves its figures.
            pending = backends[len(results) :]
            text = report(results, loads, command, time.monotonic() - started)
            if pending:
                text += f"\n_Incomplete: still to run when this was written: {', '.join(pending)}._\n"
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            print(
                f"{backend}: {len(result.outcomes)} faults in {result.elapsed:.0f} s, "
                f"{result.overlaps} overlaps, {result.regressions} regressions, "
                f"{result.survivors} surviving escapees of {result.escapees}, "
                f"{len(result.violations)} violations"
                + (f", {sum(v.ticks for v in result.ticks)} scheduled ticks" if result.ticks else ""),
                flush=True,
            )
    elapsed = time.monotonic() - started
    if not results:
        print("stopped before any backend finished; nothing to report", flush=True)
        return 1
    text = report(results, loads, command, elapsed)
    if STOP.is_set():
        text += "\n_Cut short by a signal: fewer faults ran than asked for._\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    broken = any(r.violations for r in results)
    if broken or args.keep:
        print(f"logs kept in {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {args.out} after {elapsed / 60:.1f} min", flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
