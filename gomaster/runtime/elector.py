"""Drives the election machine with a real backend, a real clock and threads.

Backend calls run on their own thread, one at a time, so the loop that feeds the machine never
blocks on I/O: when a renewal hangs, the loop still wakes at the leader's deadline and the
machine demotes. Every backend call gets a timeout no longer than what the machine allows.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from returns.result import Failure, Success

from gomaster.backends.base import LockBackend
from gomaster.core.election import (
    Announce,
    ClaimResult,
    Command,
    Config,
    Follower,
    Input,
    Leader,
    Notified,
    Observe,
    Observed,
    RenewResult,
    ResignRequested,
    SendClaim,
    SendRelease,
    SendRenew,
    State,
    Stopped,
    StopRequested,
    Tick,
    WaitUntil,
    Warn,
    initial,
    step,
)
from gomaster.core.errors import BackendError, Lost
from gomaster.core.events import Announcement
from gomaster.core.record import LockRecord
from gomaster.runtime._io import performed
from gomaster.runtime.clock import boottime

#: The loop never sleeps longer than this, so a suspend/resume is noticed promptly.
MAX_SLEEP = 0.25
#: How long a notifying backend's listener waits per call before looking again.
NOTIFY_WAIT = 5.0
#: Extra time allowed for the final release when leaving.
RELEASE_SLACK = 1.0

Role: TypeAlias = Literal["follower", "leader", "stopped"]
Request: TypeAlias = Observe | SendClaim | SendRenew | SendRelease


@dataclass(frozen=True, slots=True)
class RenewOutcome:
    """One renewal's round trip, and why it failed if it did (for metrics)."""

    latency: float
    ok: bool
    reason: Literal["lost", "unavailable"] | None = None


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """This node became ``role`` (with ``token`` when leader)."""

    role: Role
    token: int | None


@dataclass(frozen=True, slots=True)
class HolderChanged:
    """The holder this node sees changed (``record`` None: no record yet)."""

    record: LockRecord | None


Watched: TypeAlias = RenewOutcome | RoleChanged | HolderChanged


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectorStatus:
    """What this node knows: its role, and the last record it saw with the backend's clock."""

    role: Role
    token: int | None
    record: LockRecord | None
    server_now: float | None
    seen_at: float | None
    error: str | None


def _role(state: State) -> Role:
    match state:
        case Leader():
            return "leader"
        case Follower():
            return "follower"
        case Stopped():
            return "stopped"


class Elector:
    """One node's participation in the election for one lock name."""

    def __init__(
        self,
        backend: LockBackend,
        config: Config,
        announce: Callable[[Announcement], None],
        *,
        clock: Callable[[], float] = boottime,
        logger: logging.Logger | None = None,
        watch: Callable[[Watched], None] | None = None,
    ) -> None:
        self._backend = backend
        self._config = config
        self._announce = announce
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("gomaster")
        self._inputs: queue.Queue[Input] = queue.Queue()
        self._requests: queue.Queue[Request | None] = queue.Queue()
        self._state: State = initial(clock())
        self._status = ElectorStatus(
            role="follower", token=None, record=None, server_now=None, seen_at=None, error=None
        )
        self._status_lock = threading.Lock()
        self._watch = watch
        self._holder: tuple[str, int] | None = None
        self.done = threading.Event()

    @property
    def config(self) -> Config:
        """The lock name, node identity and timings of this elector."""
        return self._config

    def status(self) -> ElectorStatus:
        """A consistent snapshot, safe to call from any thread."""
        with self._status_lock:
            return self._status

    def stop(self) -> None:
        """Leave the election: demote (stopping the work) and release, then end ``run``."""
        self._inputs.put(StopRequested(self._clock()))

    def resign(self) -> None:
        """Step down and release now; contend again after one ttl."""
        self._inputs.put(ResignRequested(self._clock()))

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped. Call on a thread of its own; never raises for backend trouble."""
        io = threading.Thread(target=self._serve_requests, name="gomaster-io", daemon=True)
        io.start()
        if self._backend.notifies:
            threading.Thread(target=self._listen, name="gomaster-listen", daemon=True).start()
        try:
            self._loop()
        finally:
            self._requests.put(None)
            io.join(self._config.timing.renew_deadline + RELEASE_SLACK)
            self.done.set()

    def _loop(self) -> None:
        state, commands = step(self._config, self._state, Tick(self._clock()))
        while True:
            self._set_state(state)
            wake = self._execute(commands)
            if isinstance(state, Stopped):
                return
            timeout = MAX_SLEEP if wake is None else min(MAX_SLEEP, max(0.0, wake - self._clock()))
            try:
                event = self._inputs.get(timeout=timeout)
            except queue.Empty:
                event = Tick(self._clock())
            self._note(event)
            state, commands = step(self._config, state, event)

    def _execute(self, commands: tuple[Command, ...]) -> float | None:
        wake: float | None = None
        for command in commands:
            match command:
                case Observe() | SendClaim() | SendRenew() | SendRelease():
                    self._requests.put(command)
                case Announce(event=event):
                    self._announce(event)
                case Warn(message=message):
                    self._log.warning("%s", message, extra=self._context())
                case WaitUntil(at=at):
                    wake = at
        return wake

    def _context(self) -> dict[str, object]:
        token = self._status.token
        return {"lock": self._config.name, "node_id": self._config.me.node_id, "token": token}

    # -- status -------------------------------------------------------------------------

    def _tell(self, observation: Watched) -> None:
        """Hand an observation to the watcher (metrics, on_new_leader); it must never hurt us."""
        if self._watch is None:
            return
        try:
            self._watch(observation)
        except Exception:
            self._log.exception("observer of lock %r raised", self._config.name)

    def _set_state(self, state: State) -> None:
        self._state = state
        token = state.lease.record.token if isinstance(state, Leader) else None
        if _role(state) != self._status.role:
            self._tell(RoleChanged(_role(state), token))
        with self._status_lock:
            self._status = replace(self._status, role=_role(state), token=token)

    def _note(self, event: Input) -> None:
        """Keep the last record seen, for status(); errors are remembered until a success."""
        record: LockRecord | None = None
        server_now: float | None = None
        error: str | None = None
        reason: Literal["lost", "unavailable"] | None = None
        match event:
            case Observed(outcome=Success(seen)):
                record, server_now = seen.record, seen.server_now
            case ClaimResult(outcome=Success(got)) | RenewResult(outcome=Success(got)):
                record, server_now = got, got.renewed_at
            case Observed(outcome=Failure(problem)) | ClaimResult(outcome=Failure(problem)):
                error = str(problem)
            case RenewResult(outcome=Failure(problem)):
                error = str(problem)
                reason = "lost" if isinstance(problem, Lost) else "unavailable"
            case _:
                return
        if isinstance(event, RenewResult):
            self._tell(RenewOutcome(event.now - event.sent_at, error is None, reason))
        if record is not None or error is None:
            holder = (record.holder, record.token) if record is not None and not record.released else None
            if holder != self._holder:
                self._holder = holder
                self._tell(HolderChanged(record))
        with self._status_lock:
            if error is not None:
                self._status = replace(self._status, error=error)
            else:
                seen_at = self._clock()
                self._status = replace(
                    self._status, record=record, server_now=server_now, seen_at=seen_at, error=None
                )

    # -- the I/O thread -----------------------------------------------------------------

    def _serve_requests(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            try:
                self._serve(request)
            except Exception as exc:  # a backend bug must not kill the loop's only I/O thread
                self._log.exception("backend call %s failed unexpectedly", type(request).__name__)
                failure = BackendError(self._backend.url, f"unexpected {type(exc).__name__}: {exc}")
                now = self._clock()
                match request:
                    case Observe():
                        self._inputs.put(Observed(Failure(failure), now, now))
                    case SendClaim():
                        self._inputs.put(ClaimResult(Failure(failure), now, now))
                    case SendRenew():
                        self._inputs.put(RenewResult(Failure(failure), now, now))
                    case SendRelease():
                        pass

    def _serve(self, request: Request) -> None:
        sent_at = self._clock()
        backend = self._backend
        match request:
            case Observe(name=name, timeout=timeout):
                seen = performed(backend.observe(name, timeout))
                self._inputs.put(Observed(seen, sent_at, self._clock()))
            case SendClaim(claim=claim, timeout=timeout):
                claimed = performed(backend.claim(claim, timeout))
                self._inputs.put(ClaimResult(claimed, sent_at, self._clock()))
            case SendRenew(record=record, ttl=ttl, timeout=timeout):
                renewed = performed(backend.renew(record, ttl, max(timeout, 0.001)))
                self._inputs.put(RenewResult(renewed, sent_at, self._clock()))
            case SendRelease(record=record, timeout=timeout):
                match performed(backend.release(record, timeout)):
                    case Failure(problem):
                        self._log.warning("release of token %s failed: %s", record.token, problem)
                    case _:
                        pass

    def _listen(self) -> None:
        """Turn the backend's release notices into ``Notified`` inputs."""
        while not self.done.is_set():
            outcome = performed(self._backend.wait_for_release(self._config.name, NOTIFY_WAIT))
            match outcome:
                case Success(True):
                    self._inputs.put(Notified(self._clock()))
                case Failure(_):
                    self.done.wait(self._config.timing.retry)
                case _:
                    pass
