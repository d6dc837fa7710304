"""A node running a job on a schedule: ``python -m tests.runtime.every_node URL LOG PERIOD [--fail-first]``.

Its job appends a ``run`` mark with the tick and token to LOG (the witness the tests read), and
with ``--fail-first`` raises at the first tick it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gomaster
from gomaster import Tick, Timing
from gomaster.testing import append_mark

NAME = "scheduled"
TTL = 1.0


def main() -> None:
    url, log, period = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    fail_first = "--fail-first" in sys.argv
    ran: list[float] = []

    def job(tick: Tick) -> None:
        append_mark(log, "run", tick=tick.at, token=tick.token, valid=tick.valid())
        ran.append(tick.at)
        if fail_first and len(ran) == 1:
            raise RuntimeError("the first run fails on purpose")

    gomaster.every(period, job, backend=url, name=NAME, timing=Timing.from_ttl(TTL))


if __name__ == "__main__":
    main()
