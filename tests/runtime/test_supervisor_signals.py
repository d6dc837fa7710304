"""The supervisor's signal handler against its own main thread."""

from __future__ import annotations

import subprocess
import sys

STORM_SECONDS = 3.0
#: A hung storm is a deadlock; a healthy one ends in STORM_SECONDS plus start-up.
HANG = 60.0


def test_a_signal_arriving_while_the_supervisor_queues_a_stop_does_not_deadlock_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.runtime.signal_storm", str(STORM_SECONDS)],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("survived "), done.stdout
    assert int(done.stdout.split()[1]) > 1000, "the storm should interrupt many stop requests"
