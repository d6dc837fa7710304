"""Pure-core throughput: ``plan_acquire`` calls and election steps per second.

python -m bench.core_throughput [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from gomaster.core.decide import plan_acquire
from gomaster.core.election import Config, Tick, initial, step
from gomaster.core.record import LockRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing

GOAL_PER_SECOND = 200_000


def _rate(action: Callable[[], object], seconds: float) -> float:
    done = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(1000):
            action()
        done += 1000
    return done / elapsed


def measure(seconds: float) -> dict[str, float]:
    """Calls per second of the two hot pure functions."""
    me = NodeIdentity(node_id="me", host="h", pid=1)
    held = LockRecord(
        name="n",
        holder="other",
        version="",
        token=7,
        acquired_at=0.0,
        renewed_at=0.0,
        expires_at=10.0,
        host="h",
        pid=2,
    )
    seen = Observation(held, 5.0)
    timing = Timing()
    config = Config(name="n", me=me, timing=timing)
    state = initial(0.0)
    return {
        "plan_acquire": _rate(lambda: plan_acquire(seen, "n", me, timing), seconds),
        "step(Tick)": _rate(lambda: step(config, state, Tick(1.0)), seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    for name, rate in measure(args.seconds).items():
        verdict = "met" if rate >= GOAL_PER_SECOND else "missed"
        print(f"{name:14s} {rate:12,.0f}/s  ({rate / GOAL_PER_SECOND:.1f}x the 200k/s goal: {verdict})")


if __name__ == "__main__":
    main()
