"""``gomaster demo``: several nodes on a temporary SQLite file, with the master killed now and then.

Each node is a real ``supervise()`` process whose work writes witness marks; the demo reads
only those marks to say who is master, how long each failover took, and whether two masters
ever worked at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gomaster.core.timing import Timing
from gomaster.history import append_mark, overlaps, read_marks, tenures
from gomaster.runtime.lease import Leadership

MARK_EVERY = 0.05
POLL = 0.01
#: Nodes are ready to take over once their election loop runs; give them this long to start.
WARMUP = 2.0


def _work(log: Path, node: str) -> Callable[[Leadership], None]:
    def work(leadership: Leadership) -> None:
        append_mark(log, "start", token=leadership.token, node=node)
        while True:
            time.sleep(MARK_EVERY)
            append_mark(log, "alive", token=leadership.token, node=node)

    return work


def node_main(argv: list[str]) -> None:
    """One demo node: ``python -m gomaster.demo node --backend URL --log FILE --node NAME``."""
    parser = argparse.ArgumentParser(prog="gomaster.demo node")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--name", default="demo")
    args = parser.parse_args(argv)
    # Wall-clock stamps and the node's name, so a log shared by many nodes lines up with the
    # witness marks (which carry ``wall`` too).
    logging.basicConfig(level=logging.INFO, format=f"%(created).3f {args.node} %(levelname)s %(message)s")
    # Imported here, not at the top: the node's workers unpickle ``_work`` from this module, and
    # they need none of the supervisor's machinery.
    from gomaster.runtime.supervise import supervise

    supervise(
        _work(args.log, args.node), backend=args.backend, name=args.name, timing=Timing.from_ttl(args.ttl)
    )


@dataclass
class _Demo:
    backend: str
    log: Path
    ttl: float
    out: TextIO
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        print(f"  {time.monotonic() - self.started:7.2f}s  {text}", file=self.out, flush=True)

    def spawn(self, name: str) -> None:
        command = [sys.executable, "-m", "gomaster.demo", "node", "--backend", self.backend]
        command += ["--log", str(self.log), "--node", name, "--ttl", str(self.ttl)]
        self.nodes[name] = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)

    def stop_all(self) -> None:
        for process in self.nodes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.nodes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_demo(
    *,
    duration: float = 30.0,
    nodes: int = 3,
    ttl: float = 2.0,
    kill_every: float = 5.0,
    out: TextIO = sys.stdout,
    seed: int | None = None,
) -> int:
    """Run the demo; returns 0 when no two masters ever worked at once, else 1."""
    timing = Timing.from_ttl(ttl)
    chance = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="gomaster-demo-") as scratch:
        demo = _Demo(
            backend=f"sqlite:///{Path(scratch) / 'demo.db'}",
            log=Path(scratch) / "witness.jsonl",
            ttl=ttl,
            out=out,
        )
        print(
            f"gomaster demo: {nodes} nodes electing one master on {demo.backend}\n"
            f"  ttl {timing.ttl:g} s, heartbeat {timing.heartbeat:g} s; the master is SIGKILLed about every "
            f"{kill_every:g} s; {duration:g} s in all\n",
            file=out,
            flush=True,
        )
        for number in range(1, nodes + 1):
            demo.spawn(f"node-{number}")
        failovers: list[float] = []
        seen_tokens: set[int] = set()
        killed_at: float | None = None
        next_kill = time.monotonic() + WARMUP + kill_every * chance.uniform(0.6, 1.0)
        end = time.monotonic() + duration
        spare = nodes
        try:
            while time.monotonic() < end:
                time.sleep(POLL)
                for tenure in tenures(read_marks(demo.log)):
                    if tenure.token in seen_tokens:
                        continue
                    seen_tokens.add(tenure.token)
                    line = f"{tenure.node} is master (token {tenure.token})"
                    if killed_at is not None:
                        took = tenure.start - killed_at
                        failovers.append(took)
                        line += f": failover {took:.3f} s = {took / ttl:.2f} x ttl"
                        killed_at = None
                        next_kill = time.monotonic() + kill_every * chance.uniform(0.6, 1.4)
                    demo.say(line)
                if (
                    killed_at is None
                    and seen_tokens
                    and time.monotonic() >= next_kill
                    and end - time.monotonic() > ttl + 1.5
                ):
                    current = tenures(read_marks(demo.log))[-1]
                    victim = demo.nodes.get(current.node)
                    if victim is not None and victim.poll() is None:
                        killed_at = time.monotonic()
                        os.kill(victim.pid, signal.SIGKILL)
                        victim.wait()
                        demo.say(f"SIGKILL {current.node} (master, token {current.token})")
                        spare += 1
                        demo.spawn(f"node-{spare}")
        finally:
            demo.stop_all()
        history = tenures(read_marks(demo.log))
        clashes = overlaps(history)
        print(f"\nSummary: {len(history)} tenures, {len(failovers)} failovers", file=out)
        if failovers:
            ratios = [f / ttl for f in failovers]
            print(
                f"  failover / ttl: median {statistics.median(ratios):.3f}, max {max(ratios):.3f}", file=out
            )
        print(f"  overlapping tenures seen: {len(clashes)} (must be 0)", file=out, flush=True)
        return 0 if not clashes else 1


if __name__ == "__main__":
    node_main(sys.argv[2:] if sys.argv[1:2] == ["node"] else sys.argv[1:])
