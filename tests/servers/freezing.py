"""SIGSTOP that returns only once the server has really stopped.

``kill`` only queues the signal: each thread stops when the kernel next gets hold of it, which
on a busy machine can come after a request sent right after ``kill`` was already answered. A
test that calls a "frozen" server must not race that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

#: How often to look at the threads' states while they stop.
FREEZE_PAUSE = 0.005


def all_threads_stopped(pid: int) -> bool:
    """True when every thread of ``pid`` is stopped (state T or t in /proc)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            # The state follows the command name, which is in parentheses.
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def stop_and_wait(pid: int, what: str, timeout: float) -> None:
    """SIGSTOP ``pid`` and return once all its threads have stopped; RuntimeError after ``timeout``."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not all_threads_stopped(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} {pid} did not stop on SIGSTOP")
        time.sleep(FREEZE_PAUSE)
