"""Drives many elections, one state machine per lock name, with one backend and a real clock.

One loop thread feeds every name's machine and sleeps until the earliest deadline of any (and
at most ``MAX_SLEEP``, so a suspend is noticed promptly: deadlines run on CLOCK_BOOTTIME). One
I/O thread makes the backend calls, so the loop never blocks on I/O: when a renewal hangs, the
loop still wakes at the leader's deadline and that name demotes. Every call gets a timeout no
longer than what its machine allows, less the time it waited behind other calls; renewals go
first. One listener thread turns release notices for every name into ``Notified`` inputs.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
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
from gomaster.core.errors import Lost
from gomaster.core.events import Announcement
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from gomaster.runtime._io import performed
from gomaster.runtime.calls import Calls, Request
from gomaster.runtime.clock import boottime

#: The loop never sleeps longer than this, so a suspend/resume is noticed promptly.
MAX_SLEEP = 0.25
#: How long a notifying backend's listener waits per call before looking again.
NOTIFY_WAIT = 5.0
#: Extra time allowed for the final release when leaving.
RELEASE_SLACK = 1.0
#: Routine wake-ups (a follower's next look, a leader's next renewal) are put off to the next
#: multiple of ``retry`` (followers) or ``heartbeat`` (leaders) divided by this, so that the
#: names of a node come due together and their calls go out in one batch. Claims of an expiring
#: lease and deadlines are never put off, and a renewal never past its deadline.
ALIGN_PARTS = 8

Role: TypeAlias = Literal["follower", "leader", "stopped"]


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


@dataclass(frozen=True, slots=True)
class Hold:
    """Returned by an ``announce`` callback for a demotion whose work is still stopping: the
    election sends nothing more (its release above all) until :meth:`Election.resume`, or
    ``until`` (local clock) at the latest. Other elections carry on meanwhile."""

    until: float


@dataclass(frozen=True, slots=True)
class _Resume:
    """The work of a held demotion has stopped: go on."""


@dataclass(frozen=True, slots=True)
class _Joined:
    """An election joined while the loop runs: take it in."""


def _role(state: State) -> Role:
    match state:
        case Leader():
            return "leader"
        case Follower():
            return "follower"
        case Stopped():
            return "stopped"


def aligned(state: State, timing: Timing, wake: float) -> float:
    """``wake`` put off to the next step of a grid shared by every name (see ``ALIGN_PARTS``)
    when it is a routine one; else ``wake`` itself."""
    match state:
        case Follower(inflight=None, expiring=None, stopping=False):
            step_ = timing.retry / ALIGN_PARTS
            return math.ceil(wake / step_) * step_
        case Leader(inflight=None, lease=lease) if wake < lease.deadline:
            step_ = timing.heartbeat / ALIGN_PARTS
            return min(math.ceil(wake / step_) * step_, lease.deadline)
        case _:
            return wake


class Election:
    """This node's part in the election of one lock name, run by an :class:`Elector`."""

    def __init__(
        self,
        elector: Elector,
        config: Config,
        announce: Callable[[Announcement], Hold | None],
        watch: Callable[[Watched], None] | None,
        left: Callable[[], None] | None = None,
    ) -> None:
        self._elector = elector
        self._config = config
        self._announce = announce
        self._watch = watch
        #: Called on the elector's thread once this election is over (released, if it held).
        self.left = left
        self._state: State = initial(elector.clock())
        self._status = ElectorStatus(
            role="follower", token=None, record=None, server_now=None, seen_at=None, error=None
        )
        self._status_lock = threading.Lock()
        self._holder: tuple[str, int] | None = None
        #: Which wake-up in the elector's heap is this election's current one.
        self.wake_seq = -1
        #: Commands held back until the work of a demotion has stopped, and inputs that came
        #: meanwhile, in order; ``hold_until`` is when the hold ends anyway.
        self._held: tuple[Command, ...] | None = None
        self._backlog: list[Input] = []
        self.hold_until = 0.0
        #: Stopped, with nothing held back: the elector is done with it.
        self.finished = False

    @property
    def config(self) -> Config:
        """The lock name, node identity and timings of this election."""
        return self._config

    @property
    def name(self) -> str:
        """The lock name."""
        return self._config.name

    def status(self) -> ElectorStatus:
        """A consistent snapshot, safe to call from any thread."""
        with self._status_lock:
            return self._status

    def stop(self) -> None:
        """Leave this election: demote (stopping the work) and release."""
        self._elector.put(self, StopRequested(self._elector.clock()))

    def resign(self) -> None:
        """Step down and release now; contend again after one ttl."""
        self._elector.put(self, ResignRequested(self._elector.clock()))

    def resume(self) -> None:
        """The work of the demotion this election holds for has stopped (see :class:`Hold`)."""
        self._elector.put(self, _Resume())

    # -- driven by the elector's loop ---------------------------------------------------

    @property
    def state(self) -> State:
        """The machine's state now (read on the elector's loop)."""
        return self._state

    @property
    def stopped(self) -> bool:
        """The machine has stopped (a release may still be held back)."""
        return isinstance(self._state, Stopped)

    @property
    def holding(self) -> bool:
        """Commands wait for the work of a demotion to stop."""
        return self._held is not None

    def advance(self, event: Input) -> float | None:
        """Feed one input to the machine and carry out its commands; when to wake it next.
        While a hold lasts the input waits its turn."""
        if self._held is not None:
            self._backlog.append(event)
            return self.hold_until
        self._note(event)
        state, commands = step(self._config, self._state, event)
        self._set_state(state)
        return self._perform(commands)

    def release_hold(self) -> float | None:
        """End the hold: send what it kept back, then feed the inputs that waited."""
        held, self._held = self._held, None
        if held is None:
            return None
        wake = self._perform(held)
        while self._held is None and self._backlog:
            wake = self.advance(self._backlog.pop(0))
        return wake

    def _perform(self, commands: tuple[Command, ...]) -> float | None:
        wake: float | None = None
        for index, command in enumerate(commands):
            match command:
                case Observe() | SendClaim() | SendRenew() | SendRelease():
                    self._elector.call(self, command)
                case Announce(event=announced):
                    hold = self._announce(announced)
                    if hold is not None:
                        self._held, self.hold_until = commands[index + 1 :], hold.until
                        return hold.until
                case Warn(message=message):
                    self._elector.log.warning("%s", message, extra=self._context())
                case WaitUntil(at=at):
                    wake = at
        return wake

    def _context(self) -> dict[str, object]:
        return {"lock": self._config.name, "node_id": self._config.me.node_id, "token": self._status.token}

    def _tell(self, observation: Watched) -> None:
        """Hand an observation to the watcher (metrics, on_new_leader); it must never hurt us."""
        if self._watch is None:
            return
        try:
            self._watch(observation)
        except Exception:
            self._elector.log.exception("observer of lock %r raised", self._config.name)

    def _set_state(self, state: State) -> None:
        self._state = state
        role = _role(state)
        token = state.lease.record.token if isinstance(state, Leader) else None
        if role == self._status.role and token == self._status.token:
            return
        if role != self._status.role:
            self._tell(RoleChanged(role, token))
        with self._status_lock:
            self._status = replace(self._status, role=role, token=token)

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
                seen_at = self._elector.clock()
                self._status = replace(
                    self._status, record=record, server_now=server_now, seen_at=seen_at, error=None
                )


class Elector:
    """Every election this node takes part in, on one backend: add them with :meth:`join`, then
    call :meth:`run` on a thread of its own."""

    def __init__(
        self,
        backend: LockBackend,
        *,
        clock: Callable[[], float] = boottime,
        logger: logging.Logger | None = None,
    ) -> None:
        self._backend = backend
        self.clock = clock
        self.log = logger if logger is not None else logging.getLogger("gomaster")
        #: The elections going on; one that is over leaves it, so its name may join again.
        self._elections: dict[str, Election] = {}
        self._joining = threading.Lock()
        self._closed = False
        self._inputs: queue.Queue[tuple[Election, Input | _Resume | _Joined]] = queue.Queue()
        #: Since when (local clock) release notices of each name have been live; replaced whole
        #: by the listener, read by the I/O thread (see :meth:`_notices_live`).
        self._heard_since: dict[str, float] = {}
        self._calls: Calls[Election] = Calls(backend, self.put, clock, self.log, self._notices_live)
        self._wakes: list[tuple[float, int, Election]] = []
        self._seq = itertools.count()
        self._running = False
        self.done = threading.Event()

    def join(
        self,
        config: Config,
        announce: Callable[[Announcement], Hold | None],
        *,
        watch: Callable[[Watched], None] | None = None,
        left: Callable[[], None] | None = None,
    ) -> Election:
        """Take part in the election of ``config.name``, before or while :meth:`run` runs (a
        name once at a time); ``left`` is called when this election is over (``Election.stop``).
        Refused once the elector is stopping or done."""
        with self._joining:
            if self._closed:
                raise RuntimeError("this elector is stopping: it takes no more elections")
            if config.name in self._elections:
                raise ValueError(f"lock name {config.name!r} is already taken part in by this elector")
            election = Election(self, config, announce, watch, left)
            self._elections[config.name] = election
            if self._running:
                self.put(election, _Joined())
        return election

    @property
    def elections(self) -> tuple[Election, ...]:
        """Every election going on, in the order joined."""
        with self._joining:
            return tuple(self._elections.values())

    def stop(self) -> None:
        """Leave every election: demote (stopping the work) and release, then end ``run``."""
        with self._joining:
            self._closed = True
        for election in self.elections:
            election.stop()

    def put(self, election: Election, event: Input | _Resume | _Joined) -> None:
        """Queue an input for ``election``'s machine (from any thread)."""
        self._inputs.put((election, event))

    def call(self, election: Election, request: Request) -> None:
        """Queue a backend call for the I/O thread."""
        self._calls.put(election, request)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Run until every election is over (those joined meanwhile too). Never raises for
        backend trouble."""
        with self._joining:
            self._running = True
            first = tuple(self._elections.values())
        slack = max((e.config.timing.renew_deadline for e in first), default=0.0)
        io = threading.Thread(target=self._calls.serve, name="gomaster-io", daemon=True)
        io.start()
        if self._backend.notifies:
            threading.Thread(target=self._listen, name="gomaster-listen", daemon=True).start()
        try:
            self._loop(first)
        finally:
            self._calls.close()
            io.join(slack + RELEASE_SLACK)
            self.done.set()

    def _going_on(self) -> bool:
        """Some election is not over; once none is, no more may join."""
        with self._joining:
            if not self._elections:
                self._closed = True
            return not self._closed or bool(self._elections)

    def _loop(self, first: tuple[Election, ...]) -> None:
        now = self.clock()
        for election in first:
            self._advance(election, Tick(now))
        while self._going_on():
            now = self.clock()
            timeout = MAX_SLEEP if not self._wakes else min(MAX_SLEEP, max(0.0, self._wakes[0][0] - now))
            try:
                item: tuple[Election, Input | _Resume | _Joined] | None = self._inputs.get(timeout=timeout)
            except queue.Empty:
                item = None
            while item is not None:
                self._advance(*item)
                try:
                    item = self._inputs.get_nowait()
                except queue.Empty:
                    item = None
            self._tick_due()

    def _advance(self, election: Election, event: Input | _Resume | _Joined) -> None:
        """Step one election and schedule its next wake-up."""
        if election.finished:
            return
        if isinstance(event, _Joined):
            event = Tick(self.clock())
        if isinstance(event, _Resume):
            wake = election.release_hold()
        elif election.holding and self.clock() >= election.hold_until:
            self.log.warning("lock %r: the work did not confirm its stop in time; going on", election.name)
            election.release_hold()
            wake = election.advance(event)
        else:
            wake = election.advance(event)
        if election.stopped and not election.holding:
            self._finish(election)
            return
        at = (
            aligned(election.state, election.config.timing, wake)
            if wake is not None
            else self.clock() + MAX_SLEEP
        )
        seq = next(self._seq)
        election.wake_seq = seq
        heapq.heappush(self._wakes, (at, seq, election))

    def _finish(self, election: Election) -> None:
        """The election is over: it leaves (its name may join again), and says so."""
        election.finished, election.wake_seq = True, -1
        with self._joining:
            if self._elections.get(election.name) is election:
                del self._elections[election.name]
        if election.left is not None:
            try:
                election.left()
            except Exception:
                self.log.exception("the leave callback of lock %r raised", election.name)

    def _tick_due(self) -> None:
        """Tick every election whose wake-up time has come."""
        now = self.clock()
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            _, seq, election = heapq.heappop(wakes)
            if seq == election.wake_seq:
                self._advance(election, Tick(now))

    # -- the I/O thread -----------------------------------------------------------------

    def _listen(self) -> None:
        """Turn the backend's release notices into ``Notified`` inputs for the names followed,
        and keep track of since when they have been live.

        A name's notices count as live from the end of the first wait that included it and
        returned without a failure (by then it is subscribed), until a wait fails. When that
        happens every election gets a ``Notified``: a follower sleeping on notices that are
        gone looks at once and, its looks no longer marked ``notices``, polls every ``retry``
        again until they are back.
        """
        while not self.done.is_set():
            going_on = self.elections
            retry = min((e.config.timing.retry for e in going_on), default=MAX_SLEEP)
            names = [e.name for e in going_on if not e.stopped]
            outcome = performed(self._backend.wait_for_releases(names, NOTIFY_WAIT))
            now = self.clock()
            match outcome:
                case Success(released):
                    since = self._heard_since
                    self._heard_since = {name: since.get(name, now) for name in names}
                    by_name = {e.name: e for e in going_on}
                    for name in released:
                        election = by_name.get(name)
                        if election is not None:
                            self.put(election, Notified(now))
                case Failure(_):
                    lapsed, self._heard_since = bool(self._heard_since), {}
                    if lapsed:
                        for election in self.elections:
                            self.put(election, Notified(now))
                    self.done.wait(retry)

    def _notices_live(self, name: str, sent_at: float) -> bool:
        """Release notices of ``name`` have been live since before ``sent_at`` and still are
        (asked by the I/O thread when a look's answer is in)."""
        since = self._heard_since.get(name)
        return since is not None and since <= sent_at
