"""gomaster: exactly one master among the processes of a service, through a backend lease.

import gomaster

def migrate(leadership: gomaster.Leadership) -> None:
    ...  # runs on one node at a time; leadership.token fences its writes

if __name__ == "__main__":
    gomaster.supervise(migrate, backend="mysql://app:secret@db/app", name="migrations")
"""

from gomaster._version import __version__
from gomaster.backends import LockBackend, connect
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from gomaster.runtime.lease import Leadership
from gomaster.runtime.master import HookError, Master
from gomaster.runtime.status import Status
from gomaster.runtime.supervise import supervise

__all__ = [
    "HookError",
    "Leadership",
    "LockBackend",
    "LockRecord",
    "Master",
    "Status",
    "Timing",
    "__version__",
    "connect",
    "supervise",
]
