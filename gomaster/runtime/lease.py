"""What master work sees of its mastership: a token and a cheap validity check.

The supervisor publishes the current token and the leader's local deadline into shared memory
on every renewal; ``Leadership.valid()`` reads it without any I/O, so work can check it before
each side effect.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import multiprocess

from gomaster.runtime.clock import boottime

_TOKEN, _DEADLINE = 0, 1


class SharedLease:
    """Two doubles per lock name in shared memory: the token that is master here, and until
    when (boottime). One array serves every name of a supervisor; :meth:`at` is one name's."""

    def __init__(self, context: Any | None = None, size: int = 1) -> None:
        ctx = context if context is not None else multiprocess.get_context("spawn")
        #: How many names' cells it has.
        self.size = max(1, size)
        self._cells: Any = ctx.RawArray("d", 2 * self.size)
        self._base = 0

    def at(self, index: int) -> SharedLease:
        """The lease of the ``index``-th name, sharing this one's memory."""
        view = copy.copy(self)
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
