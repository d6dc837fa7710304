"""``supervise()`` with targets that return awaitables: each runs in an event loop of its own in
its target process, and the end of the tenure cancels it at once; real processes on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gomaster import Timing
from tests.helpers import wait_until
from tests.runtime.cluster import ROOT

TIMING = Timing.from_ttl(1.0)
LABELS = ("plain", "partial", "lambda")


def _marks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_coroutine_targets_run_while_master_and_are_cancelled_when_the_tenure_ends(tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    node = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.async_app", f"sqlite:///{tmp_path / 'locks.db'}", str(marks)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(_marks(marks)) == 3, what="every coroutine target started")
        assert sorted(_marks(marks)) == sorted(f"started {label} 1" for label in LABELS)
        node.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert node.wait(10) == 0
        took = time.monotonic() - stopped
        cancelled = [line for line in _marks(marks) if line.startswith("cancelled")]
        assert sorted(cancelled) == sorted(f"cancelled {label} 1" for label in LABELS)
        assert took < TIMING.grace + 2.0, f"the node took {took:.2f} s to stop"
        assert node.stderr is not None and "never awaited" not in node.stderr.read()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)
