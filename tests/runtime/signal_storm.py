"""A supervisor whose main thread keeps asking itself to stop while a signal handler, run every
200 µs by SIGALRM, does the same: the handler interrupts ``request_stop`` halfway through.
Prints ``survived`` when the storm is over; a handler that takes a lock its thread already holds
hangs here instead."""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import time

from gomaster import Timing
from gomaster.backends import connect
from gomaster.core.election import Config
from gomaster.runtime.supervisor import Job, Supervisor
from tests.helpers import identity

STORM = 0.0002


def _noop(_lead: object) -> None:
    """Never run: the supervisor is not started."""


def main(seconds: float) -> None:
    """Storm for ``seconds``; the handler is the supervisor's own."""
    job = Job(config=Config(name="storm", me=identity(), timing=Timing.from_ttl(1.0)), targets=[_noop])
    supervisor = Supervisor(connect("memory://"), [job])
    signal.signal(signal.SIGALRM, supervisor._on_signal)
    signal.setitimer(signal.ITIMER_REAL, STORM, STORM)
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        supervisor.request_stop()
        rounds += 1
        if rounds % 1000 == 0:  # keep the queue short; the loop is never run
            with contextlib.suppress(queue.Empty):
                while True:
                    supervisor._queue.get_nowait()
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"survived {rounds}", flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]))
