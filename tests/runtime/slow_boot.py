"""A node whose target takes ``--boot`` seconds to load: ``python -m tests.runtime.slow_boot ...``.

Its target is slow to unpickle, as one that imports a large application would be, and the node
asks its zygote to preload it. The node marks in ``--log`` when it sees itself hold the lock
(``held``) and when its work begins (``start``), so a test can tell whether it won the lock
before it could work.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from gomaster import Leadership, Timing, supervise
from gomaster.core.record import LockRecord
from gomaster.testing import append_mark


class SlowToLoad:
    """A target that sleeps ``boot`` seconds in the worker while it is unpickled."""

    def __init__(self, log: Path, boot: float) -> None:
        self.log = log
        self.boot = boot

    def __reduce__(self) -> tuple[object, tuple[Path, float]]:
        return (_load_slowly, (self.log, self.boot))

    def __call__(self, leadership: Leadership) -> None:
        append_mark(self.log, "start", token=leadership.token)
        while True:
            time.sleep(0.05)


def _load_slowly(log: Path, boot: float) -> SlowToLoad:
    time.sleep(boot)
    return SlowToLoad(log, boot)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--boot", type=float, required=True)
    args = parser.parse_args()
    pid = os.getpid()
    log: Path = args.log

    def seen(record: LockRecord | None) -> None:
        if record is not None and record.pid == pid and record.holder:
            append_mark(log, "held", token=record.token)

    supervise(
        SlowToLoad(log, args.boot),
        backend=args.backend,
        name="slow",
        timing=Timing.from_ttl(1.0),
        on_new_leader=seen,
        preload=True,
    )


if __name__ == "__main__":
    main()
