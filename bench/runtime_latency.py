"""Runtime latencies: supervisor -> worker pipe, and Elected -> target running (warm vs fresh).

    python -m bench.runtime_latency [--messages 500] [--elections 20] [--spawns 8]

- Pipe: the supervisor's side sends a mastership event over a ``multiprocess`` spawn-context
  ``Pipe`` to a process whose reader thread waits exactly as an idle worker's watchdog does
  (``poll(None)`` then ``recv``); the receiver stamps arrival on the shared
  ``CLOCK_MONOTONIC``, so the figure is one-way.
- Warm: a real ``Supervisor`` (SQLite backend, no other contender) in this process.
  ``SupervisorOptions.on_event`` stamps each ``Elected`` on the elector thread; the target's
  first act is a mark. Between samples the node resigns, so the supervisor replaces the
  stopped worker with a warm one before it wins again one ttl later.
- Fresh: what a supervisor without warm workers would do: at ``Elected``, spawn a worker
  (``worker_main``, the same entry point) and send it the event.
"""

from __future__ import annotations

import argparse
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
from gomaster.core.events import Announcement, Elected, Shutdown
from gomaster.core.timing import Timing
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.supervise import new_identity
from gomaster.runtime.supervisor import Supervisor, SupervisorOptions
from gomaster.runtime.worker import WorkerSpec, worker_main

GOAL_PIPE_P50 = 0.001
GOAL_WARM_P50 = 0.005
#: Pause between pipe messages, so that each one finds the reader asleep, as events do.
MESSAGE_GAP = 0.002
#: The warm benchmark's lease; the node wins again one ttl after each resignation.
WARM_TTL = 1.0
FAR = 1e12
WAIT = 30.0


@dataclass(frozen=True, slots=True)
class RuntimeLatency:
    """Seconds: pipe one-way, and Elected -> target running with a warm or a fresh worker."""

    pipe: Summary
    warm: Summary
    fresh: Summary


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


def warm_latency(elections: int, scratch: Path) -> Summary:
    """Elected (elector thread) -> target's first mark, with the supervisor's warm workers.

    Runs a supervisor on this (main) thread; a helper thread resigns after each sample. The
    supervisor's own warnings (each resignation is one) are silenced meanwhile.
    """
    log = scratch / "warm.jsonl"
    elected_at: dict[int, float] = {}

    def on_event(event: Announcement) -> None:
        if isinstance(event, Elected):
            elected_at[event.token] = time.monotonic()

    backend = connect(f"sqlite:///{scratch / 'warm.db'}")
    config = Config(name="bench_warm", me=new_identity("bench"), timing=Timing.from_ttl(WARM_TTL))
    supervisor = Supervisor(
        [functools.partial(mark_start, str(log))], backend, config, SupervisorOptions(on_event=on_event)
    )
    delays: list[float] = []
    failure: list[BaseException] = []

    def drive() -> None:
        tail = MarkTail(log)
        try:
            tail.next_start(0.0, WAIT)  # the first election comes before any worker is warm
            supervisor.elector.resign()
            while len(delays) < elections:
                mark = tail.next_start(0.0, WAIT)
                token = int(str(mark["token"]))
                delays.append(float(str(mark["t"])) - elected_at[token])
                supervisor.elector.resign()
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
        raise RuntimeError(f"warm benchmark failed: {failure[0]!r}")
    return summarize(delays)


def fresh_latency(spawns: int, scratch: Path) -> Summary:
    """Elected -> target's first mark when the worker is only spawned at Elected."""
    context = multiprocess.get_context("spawn")
    lease = SharedLease(context)
    log = scratch / "fresh.jsonl"
    tail = MarkTail(log)
    delays: list[float] = []
    for token in range(1, spawns + 1):
        lease.publish(token, FAR)
        spec = WorkerSpec(
            index=0,
            label="bench",
            target=functools.partial(mark_start, str(log)),
            supervisor_pid=os.getpid(),
            grace=1.0,
        )
        started = time.monotonic()
        parent, child = context.Pipe()
        process = context.Process(target=worker_main, args=(child, spec, lease))
        process.start()
        child.close()
        parent.send(Elected(name="bench", node_id="n", token=token, since=0.0, deadline=FAR))
        mark = tail.next_start(started, WAIT)
        delays.append(float(str(mark["t"])) - started)
        parent.send(Shutdown())
        os.killpg(process.pid, signal.SIGKILL)
        process.join(WAIT)
        parent.close()
    return summarize(delays)


def measure(*, messages: int = 500, elections: int = 20, spawns: int = 8) -> RuntimeLatency:
    """All three runtime latencies, in one run."""
    with tempfile.TemporaryDirectory(prefix="gomaster-bench-") as scratch:
        pipe = pipe_latency(messages)
        warm = warm_latency(elections, Path(scratch))
        fresh = fresh_latency(spawns, Path(scratch))
    return RuntimeLatency(pipe=pipe, warm=warm, fresh=fresh)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--elections", type=int, default=20)
    parser.add_argument("--spawns", type=int, default=8)
    args = parser.parse_args()
    result = measure(messages=args.messages, elections=args.elections, spawns=args.spawns)
    for label, figures in (("pipe", result.pipe), ("warm", result.warm), ("fresh", result.fresh)):
        print(f"{label:6s} p50 {figures.p50 * 1e3:8.3f} ms  p99 {figures.p99 * 1e3:8.3f} ms  n={figures.n}")


if __name__ == "__main__":
    main()
