"""gomaster: exactly one master among the processes of a service, through a backend lease.

import gomaster

def migrate(leadership: gomaster.Leadership) -> None:
    ...  # runs on one node at a time; leadership.token fences its writes

if __name__ == "__main__":
    gomaster.supervise(migrate, backend="mysql://app:secret@db/app", name="migrations")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gomaster._version import __version__

if TYPE_CHECKING:
    from gomaster.backends import LockBackend, connect
    from gomaster.core.record import LockRecord
    from gomaster.core.timing import Timing
    from gomaster.runtime.every import On, every, schedules
    from gomaster.runtime.lease import Leadership
    from gomaster.runtime.master import HookError, Master
    from gomaster.runtime.scheduled import Tick
    from gomaster.runtime.status import Status
    from gomaster.runtime.supervise import supervise

#: Where each public name lives. They are imported on first use (PEP 562), so that a worker
#: process, which imports ``gomaster.runtime.worker`` and none of these, does not pay for the
#: election, the supervisor and the backends at every start (about 30 % of its CPU).
_HOMES = {
    "HookError": "gomaster.runtime.master",
    "Leadership": "gomaster.runtime.lease",
    "LockBackend": "gomaster.backends",
    "LockRecord": "gomaster.core.record",
    "Master": "gomaster.runtime.master",
    "On": "gomaster.runtime.every",
    "Status": "gomaster.runtime.status",
    "Tick": "gomaster.runtime.scheduled",
    "Timing": "gomaster.core.timing",
    "connect": "gomaster.backends",
    "every": "gomaster.runtime.every",
    "schedules": "gomaster.runtime.every",
    "supervise": "gomaster.runtime.supervise",
}


def __getattr__(name: str) -> object:
    """Import a public name from its module the first time it is used."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'gomaster' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "HookError",
    "Leadership",
    "LockBackend",
    "LockRecord",
    "Master",
    "On",
    "Status",
    "Tick",
    "Timing",
    "__version__",
    "connect",
    "every",
    "schedules",
    "supervise",
]
