"""The local clock for deadlines: it keeps counting through suspend, unlike CLOCK_MONOTONIC.

A laptop lid or a VM pause must not make a leader believe less time passed than did, so
deadlines use ``CLOCK_BOOTTIME`` where the platform has it.
"""

from __future__ import annotations

import time

_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def boottime() -> float:
    """Seconds on a clock that never goes back and counts time spent suspended (Linux)."""
    return time.clock_gettime(_CLOCK)
