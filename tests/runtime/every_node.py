"""A node running a job on a schedule:
``python -m tests.runtime.every_node URL LOG PERIOD [--fail-first] [--two]``.

Its job appends a ``run`` mark with the tick, token and lock name to LOG (the witness the tests
read); with ``--fail-first`` it raises at the first tick it runs. With ``--two`` the node carries
a second name, ``SECOND``, every two periods, in the same supervisor (``gomaster.schedules``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gomaster
from gomaster import Tick, Timing
from gomaster.testing import append_mark

NAME = "scheduled"
SECOND = "second"
TTL = 1.0


def main() -> None:
    url, log, period = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    fail_first = "--fail-first" in sys.argv
    ran: list[float] = []

    def job(tick: Tick) -> None:
        append_mark(log, "run", tick=tick.at, token=tick.token, valid=tick.valid(), lock=tick.leadership.name)
        ran.append(tick.at)
        if fail_first and len(ran) == 1:
            raise RuntimeError("the first run fails on purpose")

    if "--two" in sys.argv:
        both = {NAME: gomaster.On(period=period, job=job), SECOND: gomaster.On(period=2 * period, job=job)}
        gomaster.schedules(both, backend=url, timing=Timing.from_ttl(TTL))
        return
    gomaster.every(period, job, backend=url, name=NAME, timing=Timing.from_ttl(TTL))


if __name__ == "__main__":
    main()
