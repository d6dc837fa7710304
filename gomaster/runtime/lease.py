"""What master work sees of its mastership: a token and a cheap validity check.

The supervisor publishes the current token and the leader's local deadline into shared memory
on every renewal; ``Leadership.valid()`` reads it without any I/O, so work can check it before
each side effect.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field

from gomaster.runtime.clock import boottime

_TOKEN, _DEADLINE = 0, 1
_CELL = 8  # one double


class SharedLease:
    """Two doubles per lock name in shared memory: the token that is master here, and until
    when (boottime). One mapping serves every name of a supervisor; :meth:`at` is one name's.

    The memory is a memfd mapped shared, so a process started with its descriptor maps the same
    pages (:meth:`attach`: the zygote) and every process forked after that inherits them (the
    workers, the targets), however the first process was started: a ``multiprocess`` array
    reaches only the processes ``multiprocess`` starts.
    """

    def __init__(self, size: int = 1) -> None:
        cells = 2 * max(1, size)
        fd = os.memfd_create("gomaster-lease")  # close-on-exec: passed only on purpose
        try:
            os.ftruncate(fd, cells * _CELL)
            self._setup(fd, cells)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int, size: int) -> SharedLease:
        """The lease of ``size`` names whose memory ``fd`` holds (a descriptor its creator
        passed on); the caller may close ``fd`` once this returns."""
        lease = cls.__new__(cls)
        lease._setup(fd, 2 * max(1, size))
        lease._fd = -1
        return lease

    def _setup(self, fd: int, cells: int) -> None:
        self._fd = fd
        self._size = cells // 2
        self._map = mmap.mmap(fd, cells * _CELL, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._cells = memoryview(self._map).cast("d")  # 8-byte aligned: each store is one write
        self._base = 0

    def __reduce__(self) -> tuple[object, ...]:
        """Sent to a process that ``multiprocess`` spawns (an application's supervisor), the
        memfd goes with it, and the lease there owns its copy (it can pass it on in turn)."""
        from multiprocess.reduction import DupFd

        return (_rebuilt, (DupFd(self._fd), self._size, self._base))

    @property
    def size(self) -> int:
        """How many names' cells the memory holds."""
        return self._size

    def fileno(self) -> int:
        """The memfd holding the cells, for a process that will :meth:`attach` to them (-1 in
        a lease that was attached: only its creator passes it on)."""
        return self._fd

    def at(self, index: int) -> SharedLease:
        """The lease of the ``index``-th name, sharing this one's memory."""
        view = SharedLease.__new__(SharedLease)
        view.__dict__.update(self.__dict__)  # the same mapping (not copy.copy: see __reduce__)
        view._base = 2 * index
        return view

    def publish(self, token: int, deadline: float) -> None:
        """Record that ``token`` is master here until local ``deadline``."""
        self._cells[self._base + _DEADLINE] = 0.0
        self._cells[self._base + _TOKEN] = float(token)
        self._cells[self._base + _DEADLINE] = deadline

    def revoke(self) -> None:
        """No token is master here any more."""
        self._cells[self._base + _DEADLINE] = 0.0

    def deadline_for(self, token: int) -> float:
        """Local time until which ``token`` may act, or 0 when it is not the current token."""
        deadline = float(self._cells[self._base + _DEADLINE])
        return deadline if int(self._cells[self._base + _TOKEN]) == token else 0.0


def _rebuilt(fd: object, size: int, base: int) -> SharedLease:
    """A lease sent through :meth:`SharedLease.__reduce__`, in the process that received it."""
    own = fd.detach()  # type: ignore[attr-defined]
    lease = SharedLease.attach(own, size)
    lease._fd, lease._base = own, base
    return lease


@dataclass(frozen=True, slots=True)
class Leadership:
    """Handed to each target while this node is master.

    ``token`` is the fencing token of this tenure: pass it along with writes elsewhere so a store
    can reject writes from an older master. ``since`` is when the lease was acquired, by the
    backend's clock (epoch seconds).
    """

    name: str
    node_id: str
    token: int
    since: float
    _lease: SharedLease | None = field(default=None, repr=False, compare=False)

    def valid(self) -> bool:
        """True while this tenure is still known to hold the lease. No I/O: call it freely."""
        if self._lease is None:
            return False
        return boottime() < self._lease.deadline_for(self.token)

    def remaining(self) -> float:
        """Seconds this tenure is still known valid for (0 when it is over)."""
        if self._lease is None:
            return 0.0
        return max(0.0, self._lease.deadline_for(self.token) - boottime())
