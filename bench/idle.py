"""The work of a held name in the footprint and many-names benchmarks: sleeping, or none at all.

Kept free of imports beyond the standard library: every worker loads its target's module, and
whatever that module imports would be counted as the footprint of holding a name.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gomaster.runtime.lease import Leadership

#: How long each sleep of ``idle`` lasts; it wakes only to sleep again.
SLEEP = 3600.0


def idle(leadership: Leadership) -> None:
    """Sleep until stopped: a held name's work that costs nothing but its process."""
    del leadership
    while True:
        time.sleep(SLEEP)


def done(leadership: Leadership) -> None:
    """Return at once: the runtime counts the work done until the next tenure, so the node keeps
    the name with no worker running, and costs only what its election does."""
    del leadership
