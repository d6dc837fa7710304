"""``gomaster demo``: several nodes on a temporary SQLite file, with the master killed now and then.

Each node is a real ``supervise()`` process whose work writes witness marks; the demo reads
only those marks to say who is master, how long each failover took, and whether two masters
ever worked at once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

from gomaster.core.timing import Timing
from gomaster.runtime.lease import Leadership
from gomaster.runtime.tree import die_with_parent
from gomaster.testing import append_mark, overlaps, read_marks, tenures

MARK_EVERY = 0.05
POLL = 0.01
#: Seconds from a new master to the next kill, for a run long enough (see ``kill_interval``).
DEFAULT_KILL_EVERY = 5.0
#: The shortest derived kill interval: a master should be seen working before it is killed.
MIN_KILL_EVERY = 0.5
#: A run without ``--kill-every`` kills the master about this many times.
KILLS_PER_RUN = 4
#: How long past ``ttl`` a failover under way at the end is waited for.
FAILOVER_SLACK = 2.0
#: What ends the demo early, with its summary: Ctrl-C, a kill, the terminal closing.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _work(log: Path, node: str) -> Callable[[Leadership], None]:
    def work(leadership: Leadership) -> None:
        append_mark(log, "start", token=leadership.token, node=node)
        while True:
            time.sleep(MARK_EVERY)
            append_mark(log, "alive", token=leadership.token, node=node)

    return work


def _end_with_parent(parent: int | None, alive_fd: int | None) -> None:
    """Stop this node (gracefully, by SIGTERM) when the demo that started it dies, even by SIGKILL.

    The parent-death signal covers a demo that dies; the pipe whose write end only the demo
    holds covers the same death seen from here (and a demo that died before ``prctl``), as the
    workers do with their supervisor.
    """
    if parent is not None:
        die_with_parent(signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    if alive_fd is not None:

        def watch() -> None:
            while True:
                try:
                    if not os.read(alive_fd, 1):
                        break
                except InterruptedError:
                    continue
                except OSError:
                    break
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="gomaster-demo-parent", daemon=True).start()


def node_main(argv: list[str]) -> None:
    """One demo node: ``python -m gomaster.cli.demo node --backend URL --log FILE --node NAME``."""
    parser = argparse.ArgumentParser(prog="gomaster.cli.demo node")
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--name", default="demo")
    parser.add_argument("--parent", type=int, help="the demo's PID: stop when it dies")
    parser.add_argument("--alive-fd", type=int, help="read end of a pipe only the demo writes to")
    args = parser.parse_args(argv)
    _end_with_parent(args.parent, args.alive_fd)
    # Wall-clock stamps and the node's name, so a log shared by many nodes lines up with the
    # witness marks (which carry ``wall`` too).
    logging.basicConfig(level=logging.INFO, format=f"%(created).3f {args.node} %(levelname)s %(message)s")
    # Imported here, not at the top: the node's workers unpickle ``_work`` from this module, and
    # they need none of the supervisor's machinery.
    from gomaster.runtime.supervise import supervise

    supervise(
        _work(args.log, args.node), backend=args.backend, name=args.name, timing=Timing.from_ttl(args.ttl)
    )


def kill_interval(duration: float, kill_every: float | None) -> float:
    """Seconds from a new master to the next SIGKILL: ``kill_every`` if given, else a quarter of
    the run, from ``MIN_KILL_EVERY`` to ``DEFAULT_KILL_EVERY``, so that a short run shows
    failovers too and a long one is not a blur of them."""
    if kill_every is not None:
        return kill_every
    return min(DEFAULT_KILL_EVERY, max(MIN_KILL_EVERY, duration / KILLS_PER_RUN))


@dataclass
class _Demo:
    """The demo's nodes and what it has seen of them; each step of its loop is a method."""

    backend: str
    log: Path
    ttl: float
    out: TextIO
    interval: float
    chance: random.Random
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: The pipe whose read end every node watches: it reads EOF when the demo is gone.
    alive: tuple[int, int] = field(default_factory=os.pipe)
    failovers: list[float] = field(default_factory=list)
    seen_tokens: set[int] = field(default_factory=set)
    killed_at: float | None = None
    next_kill: float | None = None
    spawned: int = 0

    def say(self, text: str) -> None:
        _write(self.out, f"  {time.monotonic() - self.started:7.2f}s  {text}")

    def spawn(self) -> None:
        """Start one more node, which ends with the demo (see ``_end_with_parent``)."""
        self.spawned += 1
        name = f"node-{self.spawned}"
        alive_r = self.alive[0]
        command = [sys.executable, "-m", "gomaster.cli.demo", "node", "--backend", self.backend]
        command += ["--log", str(self.log), "--node", name, "--ttl", str(self.ttl)]
        command += ["--parent", str(os.getpid()), "--alive-fd", str(alive_r)]
        self.nodes[name] = subprocess.Popen(
            command, start_new_session=True, stderr=subprocess.DEVNULL, pass_fds=(alive_r,)
        )

    def notice_masters(self) -> None:
        """Say who became master since the last look, with the failover time after a kill."""
        for tenure in tenures(read_marks(self.log)):
            if tenure.token in self.seen_tokens:
                continue
            self.seen_tokens.add(tenure.token)
            line = f"{tenure.node} is master (token {tenure.token})"
            if self.killed_at is not None:
                took = tenure.start - self.killed_at
                self.failovers.append(took)
                line += f": failover {took:.3f} s = {took / self.ttl:.2f} x ttl"
                self.killed_at = None
            self.next_kill = time.monotonic() + self.interval * self.chance.uniform(0.6, 1.4)
            self.say(line)

    def kill_master_if_due(self, end: float) -> None:
        """SIGKILL the master when its time has come and its failover can still be seen."""
        now = time.monotonic()
        if self.killed_at is not None or self.next_kill is None or now < self.next_kill:
            return
        if end - now <= self.ttl / 2:
            return
        current = tenures(read_marks(self.log))[-1]
        victim = self.nodes.get(current.node)
        if victim is None or victim.poll() is not None:
            return
        self.killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        self.say(f"SIGKILL {current.node} (master, token {current.token})")
        self.spawn()

    def over(self, end: float) -> bool:
        """Past ``end``, unless a failover is under way and may still be seen."""
        now = time.monotonic()
        if now < end:
            return False
        return self.killed_at is None or now >= self.killed_at + self.ttl + FAILOVER_SLACK

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
        for fd in self.alive:
            with contextlib.suppress(OSError):
                os.close(fd)

    def summary(self) -> int:
        """Print the summary from the witness marks alone; 0 when no two tenures overlapped."""
        history = tenures(read_marks(self.log))
        clashes = overlaps(history)
        lines = [f"\nSummary: {len(history)} tenures, {len(self.failovers)} failovers"]
        if self.failovers:
            ratios = [f / self.ttl for f in self.failovers]
            lines.append(f"  failover / ttl: median {statistics.median(ratios):.3f}, max {max(ratios):.3f}")
        lines.append(f"  overlapping tenures seen: {len(clashes)} (must be 0)")
        _write(self.out, "\n".join(lines))
        return 0 if not clashes else 1


def _write(out: TextIO, text: str) -> None:
    """Print to the demo's output; a terminal that hung up (SIGHUP) must not stop the cleanup."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=out, flush=True)


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Collect SIGINT, SIGTERM and SIGHUP instead of dying of them, so the demo can stop its
    nodes and print its summary; the previous handlers come back on leaving.

    Off the main thread Python cannot handle signals, and the list simply stays empty.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def note(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(
    *,
    duration: float = 30.0,
    nodes: int = 3,
    ttl: float = 2.0,
    kill_every: float | None = None,
    out: TextIO = sys.stdout,
    seed: int | None = None,
) -> int:
    """Run the demo; returns 0 when no two masters ever worked at once, else 1.

    SIGINT (Ctrl-C), SIGTERM and SIGHUP end it early, with its nodes and its summary. A failover
    under way when ``duration`` runs out is waited for, up to ``ttl + FAILOVER_SLACK``.
    """
    timing = Timing.from_ttl(ttl)
    interval = kill_interval(duration, kill_every)
    with _stop_signals() as stopped, tempfile.TemporaryDirectory(prefix="gomaster-demo-") as scratch:
        demo = _Demo(
            backend=f"sqlite:///{Path(scratch) / 'demo.db'}",
            log=Path(scratch) / "witness.jsonl",
            ttl=ttl,
            out=out,
            interval=interval,
            chance=random.Random(seed),
        )
        _write(
            out,
            f"gomaster demo: {nodes} nodes electing one master on {demo.backend}\n"
            f"  ttl {timing.ttl:g} s, heartbeat {timing.heartbeat:g} s; each master is SIGKILLed about "
            f"{interval:g} s after it is elected; {duration:g} s in all (Ctrl-C ends it early)\n",
        )
        end = time.monotonic() + duration
        try:
            for _ in range(nodes):
                demo.spawn()
            while not stopped and not demo.over(end):
                time.sleep(POLL)
                demo.notice_masters()
                demo.kill_master_if_due(end)
            if stopped:
                demo.say(f"{signal.Signals(stopped[0]).name}: stopping the nodes")
        finally:
            demo.stop_all()
        return demo.summary()


if __name__ == "__main__":
    node_main(sys.argv[2:] if sys.argv[1:2] == ["node"] else sys.argv[1:])
