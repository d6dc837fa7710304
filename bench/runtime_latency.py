"""Runtime latencies: supervisor -> worker pipe, and Elected -> target running (forked vs spawned).

    python -m bench.runtime_latency [--messages 500] [--elections 200] [--spawns 8] [--preload]

- Pipe: the supervisor's side sends a mastership event over a ``multiprocess`` spawn-context
  ``Pipe`` to a process whose reader thread waits exactly as an idle worker's watchdog does
  (``poll(None)`` then ``recv``); the receiver stamps arrival on the shared
  ``CLOCK_MONOTONIC``, so the figure is one-way.
- Forked: a real ``Supervisor`` (SQLite backend, no other contender) in this process, whose
  zygote forks a worker at each ``Elected``. ``Job.on_event`` stamps each
  ``Elected`` on the elector thread; the target's first act is a mark. Between samples the node
  resigns and wins again one ttl later. Each start loads the target in the target's process
  (importing ``bench.marks`` and what it imports); ``--preload`` has the zygote load it once at
  boot instead, leaving the runtime's own path.
- Spawned: what each start would cost without a zygote: a process spawned at ``Elected`` that
  runs the target (the Python start-up that the zygote pays once).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiprocess

from bench.marks import MarkTail, mark_start
from bench.stats import Summary, summarize
from gomaster.backends import connect
from gomaster.core.election import Config
from gomaster.core.events import Announcement, Elected
from gomaster.core.timing import Timing
from gomaster.runtime.lease import Leadership
from gomaster.runtime.supervise import new_identity
from gomaster.runtime.supervisor import Job, Supervisor, SupervisorOptions

GOAL_PIPE_P50 = 0.001
GOAL_FORKED_P50, GOAL_FORKED_P99 = 0.003, 0.010
#: Pause between pipe messages, so that each one finds the reader asleep, as events do.
MESSAGE_GAP = 0.002
#: The forked benchmark's lease; the node wins again one ttl after each resignation.
FORKED_TTL = 0.25
FAR = 1e12
WAIT = 30.0


@dataclass(frozen=True, slots=True)
class RuntimeLatency:
    """Seconds: pipe one-way, and Elected -> target running on a forked or a spawned worker."""

    pipe: Summary
    forked: Summary
    spawned: Summary
    #: The forked path with the target preloaded in the zygote: the runtime's own hops, without
    #: the target's import, which ``forked`` pays at each start.
    preloaded: Summary | None = None


# -- supervisor -> worker pipe ---------------------------------------------------------------


def _receiver(conn: Any, count: int) -> None:
    """Child process: read ``count`` stamped events like a watchdog, then report the delays."""
    delays: list[float] = []
    done = threading.Event()

    def read() -> None:
        while len(delays) < count:
            if conn.poll(None):
                sent, _event = conn.recv()
                delays.append(time.monotonic() - sent)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait()
    conn.send(delays)


def pipe_latency(messages: int) -> Summary:
    """One-way delay of ``messages`` events over a worker pipe."""
    context = multiprocess.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_receiver, args=(child, messages))
    process.start()
    child.close()
    event = Elected(name="bench", node_id="n", token=1, since=0.0, deadline=FAR)
    try:
        time.sleep(0.5)
        for _ in range(messages):
            parent.send((time.monotonic(), event))
            time.sleep(MESSAGE_GAP)
        if not parent.poll(WAIT):
            raise RuntimeError("the pipe receiver did not report")
        delays: list[float] = parent.recv()
    finally:
        process.join(WAIT)
        if process.is_alive():
            process.kill()
    return summarize(delays)


# -- Elected -> target running ---------------------------------------------------------------


def forked_latency(elections: int, scratch: Path, *, preload: bool = False) -> Summary:
    """Elected (elector thread) -> target's first mark, on a worker the zygote forks.

    Runs a supervisor on this (main) thread; a helper thread resigns after each sample. The
    supervisor's own warnings (each resignation is one) are silenced meanwhile.
    """
    log = scratch / "forked.jsonl"
    elected_at: dict[int, float] = {}

    def on_event(event: Announcement) -> None:
        if isinstance(event, Elected):
            elected_at[event.token] = time.monotonic()

    backend = connect(f"sqlite:///{scratch / 'forked.db'}")
    config = Config(name="bench_forked", me=new_identity("bench"), timing=Timing.from_ttl(FORKED_TTL))
    job = Job(config=config, targets=[functools.partial(mark_start, str(log))], on_event=on_event)
    supervisor = Supervisor(backend, [job], SupervisorOptions(preload=preload))
    delays: list[float] = []
    failure: list[BaseException] = []

    def drive() -> None:
        tail = MarkTail(log)
        try:
            tail.next_start(0.0, WAIT)  # the first start also loads the target's modules
            supervisor.election().resign()
            while len(delays) < elections:
                mark = tail.next_start(0.0, WAIT)
                token = int(str(mark["token"]))
                delays.append(float(str(mark["t"])) - elected_at[token])
                supervisor.election().resign()
        except BaseException as exc:
            failure.append(exc)
        finally:
            supervisor.request_stop()

    helper = threading.Thread(target=drive, daemon=True)
    logger = logging.getLogger("gomaster")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        helper.start()
        supervisor.run()
        helper.join(WAIT)
    finally:
        logger.setLevel(level)
    if failure:
        raise RuntimeError(f"forked benchmark failed: {failure[0]!r}")
    return summarize(delays)


def spawned_latency(spawns: int, scratch: Path) -> Summary:
    """Start -> target's first mark for a process spawned to run the target."""
    context = multiprocess.get_context("spawn")
    log = scratch / "spawned.jsonl"
    tail = MarkTail(log)
    delays: list[float] = []
    for _ in range(spawns):
        started = time.monotonic()
        process = context.Process(target=mark_start, args=(str(log), Leadership("bench", "n", 1, 0.0)))
        process.start()
        mark = tail.next_start(started, WAIT)
        delays.append(float(str(mark["t"])) - started)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.join(WAIT)
    return summarize(delays)


def measure(
    *, messages: int = 500, elections: int = 200, spawns: int = 8, preload: bool = False
) -> RuntimeLatency:
    """Every runtime latency, in one run (the forked path both with the target loaded at each
    start and preloaded; ``preload`` measures only the latter)."""
    with tempfile.TemporaryDirectory(prefix="gomaster-bench-") as scratch:
        pipe = pipe_latency(messages)
        forked = forked_latency(elections, Path(scratch), preload=preload)
        preloaded = forked if preload else forked_latency(elections, Path(scratch), preload=True)
        spawned = spawned_latency(spawns, Path(scratch))
    return RuntimeLatency(pipe=pipe, forked=forked, spawned=spawned, preloaded=preloaded)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--elections", type=int, default=200)
    parser.add_argument("--spawns", type=int, default=8)
    parser.add_argument("--preload", action="store_true", help="the zygote loads the target once")
    args = parser.parse_args()
    result = measure(
        messages=args.messages, elections=args.elections, spawns=args.spawns, preload=args.preload
    )
    for label, figures in (("pipe", result.pipe), ("forked", result.forked), ("spawned", result.spawned)):
        print(f"{label:7s} p50 {figures.p50 * 1e3:8.3f} ms  p99 {figures.p99 * 1e3:8.3f} ms  n={figures.n}")


if __name__ == "__main__":
    main()
