"""Work in the application process: Elected -> work running, and Demoted -> work stopped.

    python -m bench.aio_latency [--samples 500]

- ``gomaster.aio``: a ``Master`` with work on SQLite in this process's event loop. The
  supervisor stamps each role change on the shared ``CLOCK_MONOTONIC`` when it announces it
  (``RoleChanged.at``); the work's first act is a stamp, and so is the end of its cancellation
  (its ``finally``). The node resigns after each sample and wins again one ttl later.
- ``Master(hooks="thread")``: the same with go-master's hooks in a thread of this process: the
  start hook's first act, and the stop hook's.

Next to them, ``bench.runtime_latency`` measures the worker-process path (Elected -> target on a
forked worker).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.stats import Summary, summarize
from gomaster import Leadership, Master, Timing, aio

GOAL_P50, GOAL_P99 = 0.001, 0.005
#: The lease of the node measured: it wins again one ttl after each resignation.
TTL = 0.1
WAIT = 30.0


@dataclass(frozen=True, slots=True)
class InAppLatency:
    """Seconds, from the supervisor's announcement to the work's reaction."""

    aio_start: Summary
    aio_stop: Summary
    thread_start: Summary
    thread_stop: Summary


def aio_latency(samples: int, scratch: Path) -> tuple[Summary, Summary]:
    """(Elected -> task running, Demoted -> task finished cancelling) for ``gomaster.aio``."""
    starts: list[float] = []
    stops: list[float] = []

    async def run() -> None:
        started, ended = asyncio.Event(), asyncio.Event()
        stamps: dict[str, float] = {}

        async def work(_leadership: Leadership) -> None:
            stamps["start"] = time.monotonic()
            started.set()
            try:
                await asyncio.Event().wait()
            finally:
                stamps["stop"] = time.monotonic()
                ended.set()

        url = f"sqlite:///{scratch / 'aio.db'}"
        async with aio.Master(url, name="bench_aio", work=work, timing=Timing.from_ttl(TTL)) as master:
            for index in range(samples + 1):
                await asyncio.wait_for(started.wait(), WAIT)
                if index:  # the first tenure also warms up: not counted
                    starts.append(stamps["start"] - master._announced_at)
                started.clear()
                master.resign()
                await asyncio.wait_for(ended.wait(), WAIT)
                if index:
                    stops.append(stamps["stop"] - master._announced_at)
                ended.clear()

    asyncio.run(run())
    return summarize(starts), summarize(stops)


def thread_latency(samples: int, scratch: Path) -> tuple[Summary, Summary]:
    """(Elected -> start hook running, Demoted -> stop hook running) for ``hooks="thread"``."""
    started, stopped = threading.Event(), threading.Event()
    stamps: dict[str, float] = {}

    def start() -> None:
        stamps["start"] = time.monotonic()
        started.set()

    def stop() -> None:
        stamps["stop"] = time.monotonic()
        stopped.set()

    url = f"sqlite:///{scratch / 'thread.db'}"
    master = Master(
        url,
        name="bench_thread",
        start_hook=start,
        stop_hook=stop,
        timing=Timing.from_ttl(TTL),
        hooks="thread",
    )
    starts: list[float] = []
    stops: list[float] = []
    master.start()
    try:
        for index in range(samples + 1):
            if not started.wait(WAIT):
                raise RuntimeError("no election within the wait")
            if index:
                starts.append(stamps["start"] - master._announced_at)
            started.clear()
            master.resign()
            if not stopped.wait(WAIT):
                raise RuntimeError("no stop hook within the wait")
            if index:
                stops.append(stamps["stop"] - master._announced_at)
            stopped.clear()
    finally:
        master.stop(timeout=WAIT)
    return summarize(starts), summarize(stops)


def measure(samples: int = 500) -> InAppLatency:
    """Both paths, ``samples`` elections and demotions each, with the supervisor's warnings
    about each resignation silenced."""
    logger = logging.getLogger("gomaster")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="gomaster-bench-aio-") as scratch:
            aio_start, aio_stop = aio_latency(samples, Path(scratch))
            thread_start, thread_stop = thread_latency(samples, Path(scratch))
    finally:
        logger.setLevel(level)
    return InAppLatency(aio_start, aio_stop, thread_start, thread_stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.aio_latency", description=__doc__)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    result = measure(args.samples)
    for label, summary in (
        ("aio: Elected -> task running", result.aio_start),
        ("aio: Demoted -> task cancelled", result.aio_stop),
        ("thread: Elected -> start hook", result.thread_start),
        ("thread: Demoted -> stop hook", result.thread_stop),
    ):
        print(f"{label:34} n={summary.n} p50={summary.p50 * 1e3:.3f} ms p99={summary.p99 * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
