"""The deadline guard of work that runs in the application process (``gomaster.aio``, hooks in
a thread): the layer of the promise that trusts neither the application's event loop nor the
supervisor.

A thread reads the tenure's lease from shared memory. When the lease's deadline passes (the
supervisor revokes it on a demotion, and stops renewing it when it is frozen or gone) the guard
asks the work to stop; when the work has still not stopped ``grace`` after that, or after the
demotion asked it to, the guard ends the process with :data:`EXIT_OVERRUN` (with
``overrun="warn"``, it only logs).

The supervisor may still renew after the guard saw the deadline pass: a renewal answered just
before the deadline is published a moment after it, and in between the guard, in another
process, acts on the old value. The supervisor then does not demote, and nothing else would
start the work again; so once the stopped work has settled, a guard that sees the same token's
deadline move into the future calls ``resume(token)``. It never resumes a token whose lease was
revoked (a demotion) or replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gomaster.runtime.clock import boottime
from gomaster.runtime.lease import SharedLease
from gomaster.runtime.supervisor import Overrun

_log = logging.getLogger("gomaster")

#: The exit status of an application that a guard ended (its work outlived ``grace``).
EXIT_OVERRUN = 70
#: The guard looks at the deadline at least this often (its sleep does not count a suspend).
GUARD_WATCH_MAX = 0.25
#: How often a guard looks whether a lapsed lease came back, in the first second after its
#: deadline (a renewal published late lands within milliseconds; a demotion revokes it).
GUARD_RESUME_WATCH = 0.02


@dataclass(slots=True)
class _Tenure:
    token: int
    stop_asked_at: float | None = None


class Guard:
    """Watches one tenure at a time: :meth:`watch` when its work starts, :meth:`stopping` when
    the application asks it to stop, :meth:`settle` once it has stopped. ``ask_stop(token)`` is
    called on the guard's thread when the lease runs out first, and ``resume(token)`` when that
    token's lease comes back after its work settled; keep both quick and thread-safe."""

    def __init__(
        self,
        lease: SharedLease,
        grace: float,
        overrun: Overrun,
        ask_stop: Callable[[int], None],
        resume: Callable[[int], None],
    ) -> None:
        self._lease = lease
        self._grace = grace
        self._overrun = overrun
        self._ask_stop = ask_stop
        self._resume = resume
        self._changed = threading.Condition()
        self._tenure: _Tenure | None = None
        #: The token whose work the guard stopped because its lease ran out: once that work has
        #: settled, until its lease comes back or ends.
        self._lapsed: int | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gomaster-guard", daemon=True)
        self._thread.start()

    def watch(self, token: int) -> None:
        """The work of tenure ``token`` runs from now."""
        with self._changed:
            self._tenure = _Tenure(token)
            self._lapsed = None
            self._changed.notify_all()

    def stopping(self, token: int) -> None:
        """The work of ``token`` was asked to stop (a demotion): ``grace`` counts from now."""
        with self._changed:
            tenure = self._tenure
            if tenure is not None and tenure.token == token and tenure.stop_asked_at is None:
                tenure.stop_asked_at = boottime()
            self._changed.notify_all()

    def settle(self, token: int) -> None:
        """The work of ``token`` has stopped."""
        with self._changed:
            if self._tenure is not None and self._tenure.token == token:
                self._tenure = None
            self._changed.notify_all()

    def close(self) -> None:
        """End the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(1.0)

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                self._changed.wait(self._check())

    def _check(self) -> float:
        """Act on the deadline; how long to sleep before looking again."""
        tenure = self._tenure
        if tenure is None:
            return self._check_lapsed()
        now = boottime()
        deadline = self._lease.deadline_for(tenure.token)
        if tenure.stop_asked_at is None:
            if now < deadline:
                return min(GUARD_WATCH_MAX, deadline - now)
            tenure.stop_asked_at = now
            self._lapsed = tenure.token
            _log.warning("the lease of token %d ran out: stopping its work", tenure.token)
            try:
                self._ask_stop(tenure.token)
            except Exception:
                _log.exception("asking the work of token %d to stop raised", tenure.token)
        out_of_grace = tenure.stop_asked_at + self._grace
        if now < out_of_grace:
            return min(GUARD_WATCH_MAX, out_of_grace - now)
        if self._overrun == "warn":
            _log.error("the work of token %d outlived its grace; going on (overrun='warn')", tenure.token)
            self._tenure = None
            return GUARD_WATCH_MAX
        _log.critical(
            "the work of token %d did not stop within %.1f s of losing the lease (a blocked event "
            "loop, a hook that does not return?): ending this process so that it cannot run on",
            tenure.token,
            self._grace,
        )
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(EXIT_OVERRUN)

    def _check_lapsed(self) -> float:
        """With no work running: resume a lapsed token whose lease came back."""
        token = self._lapsed
        if token is None:
            return GUARD_WATCH_MAX
        deadline = self._lease.deadline_for(token)
        if deadline == 0.0:  # revoked (a demotion) or another token's: it will not come back
            self._lapsed = None
            return GUARD_WATCH_MAX
        now = boottime()
        if deadline <= now:  # a renewal may still be published soon; much later, rarely
            return GUARD_RESUME_WATCH if now - deadline < GUARD_WATCH_MAX * 4 else GUARD_WATCH_MAX
        self._lapsed = None
        _log.warning("the lease of token %d was renewed after all: its work starts again", token)
        try:
            self._resume(token)
        except Exception:
            _log.exception("resuming the work of token %d raised", token)
        return GUARD_WATCH_MAX
