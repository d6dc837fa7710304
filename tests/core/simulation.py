"""A deterministic simulation of many electors sharing one model store.

Everything here is simulated: one ``random.Random(seed)``, one heap of timed events, no threads
and no real clock, so a seed replays exactly. The model:

- **Real time** is the heap's clock. The store (a plain dict driven by the pure statements of
  :mod:`gomaster.core.model`) applies each statement at the real time it arrives, so the
  backend's clock *is* real time.
- **Nodes** run the pure election machine. Each has a local clock ``offset + rate * real`` with
  ``rate`` in ``[1 - drift, 1 + drift]``; the machine only ever sees local times.
- **Requests** take a random one-way delay, and so do replies. A request whose answer has not
  arrived by ``sent_at + timeout`` (local) is answered with a ``BackendError`` at that moment,
  as the runtime's timeout would; a reply arriving later is dropped.
- **Master work** starts a little after ``Announce(Elected)`` and stops at most ``grace`` after
  ``Announce(Demoted)`` (sometimes exactly ``grace``: the SIGKILL). Like the supervisor, the
  node runs the commands after a ``Demoted`` only once the work has stopped, so the release
  always follows the stop.
- **Faults** come in windows: crashes (the work stops at once, the node never speaks again and
  comes back later as a new node id), freezes (the node processes nothing, while its work is
  assumed to keep running until the node has run again and acted on its deadline), long or lost
  messages, network blips (one host's messages all lost or slow for a while), store errors
  (some after the statement took effect), and every node's clock drifting by up to ``drift``.
  After each window the faults stop, sometimes with one last crash of the leader, and the
  simulation checks that a leader appears within :meth:`Scenario.liveness_bound`, then asks
  the leader to stop gracefully and checks the handover within
  :meth:`Scenario.handover_bound`.
- **Release notices** (``Scenario.notify``) reach each node after a one-way delay, or are lost
  like any message. A node's listener notices a lost one up to ``retry`` later (as a broken
  connection is noticed on the next read): it then gives the machine a ``Notified`` and is back
  up to ``retry`` after that. A look's answer says ``notices`` when the listener was up from
  before the look was sent until the answer is taken in, so a look answered between a loss and
  its detection claims notices that were not live, as a real listener can.

:func:`run` returns a :class:`Report` whose checks are plain functions of the recorded tenures
and freezes (:func:`find_overlaps`, :func:`unexplained_overlaps`, :func:`token_order_problems`),
so they can be tried on hand-made histories too.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeAlias

from returns.result import Failure, Success

from gomaster.core.election import (
    Announce,
    ClaimResult,
    Command,
    Config,
    Input,
    Leader,
    Notified,
    Observe,
    Observed,
    RenewResult,
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
from gomaster.core.errors import BackendError
from gomaster.core.events import Demoted, Elected, Renewed
from gomaster.core.model import claim_in, release_in, renew_in
from gomaster.core.record import LockRecord, NodeIdentity, Observation
from gomaster.core.timing import Timing

LOCK_NAME = "sim"
STORE_URL = "sim://store"

#: The timing every scenario uses unless told otherwise: the defaults scaled to a 2 s lease.
DEFAULT_TIMING = Timing.from_ttl(2.0)

#: Freezes in a safe scenario stay just below the safety margin.
SAFE_FREEZE_FRACTION = 0.99

#: Round trips the liveness bounds allow on top of the lease and polling arithmetic (see
#: :meth:`Scenario.liveness_bound`).
LIVENESS_ROUND_TRIPS = 6
HANDOVER_ROUND_TRIPS = 3

#: Comparisons of simulated instants tolerate float rounding, nothing more.
EPSILON = 1e-9

#: Local clocks start anywhere in this range: offsets between nodes must not matter.
CLOCK_OFFSET_RANGE = 1e5

#: Node clocks are fast, slow, or in between, each a third of the time: extremes find bugs.
_EXTREME_RATE_CHANCE = 2 / 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """The knobs of one simulated cluster.

    Durations are seconds; ``*_chance`` is per message (or per stop, or per quiet spell);
    ``*_per_ttl`` is how many such faults the whole cluster suffers per ttl of a fault window.
    ``drift`` defaults to ``timing.max_drift``; ``freeze_max`` defaults to just under
    ``timing.safety_margin``. A node is never frozen again less than one ttl after its last
    freeze ended, so no lease ever sees two freezes: the guarantee's "frozen longer than the
    safety margin" is about the total freeze within one lease.
    """

    timing: Timing = DEFAULT_TIMING
    nodes: int = 5
    drift: float | None = None
    delay_min: float = 0.0001
    delay_max: float = 0.020
    long_delay_chance: float = 0.03
    long_delay_fraction: float = 0.75
    loss_chance: float = 0.01
    error_chance: float = 0.01
    start_delay_max: float = 0.005
    sigkill_chance: float = 0.3
    crashes_per_ttl: float = 0.2
    freezes_per_ttl: float = 0.5
    blips_per_ttl: float = 0.3
    freeze_max: float | None = None
    downtime_max_ttls: float = 2.0
    fault_window_ttls: float = 10.0
    leader_bias: float = 0.5
    final_crash_chance: float = 0.5
    notify: bool = False
    #: Step the store's clock forward by this much at the start of every fault window (0: never).
    #: A step beyond the safety margin breaks guarantee 1's second assumption; the run shows the
    #: elector detecting it (``clock steps detected``) and demoting.
    clock_step: float = 0.0

    @property
    def clock_drift(self) -> float:
        """How far any node's clock rate may be from real time's."""
        return self.timing.max_drift if self.drift is None else self.drift

    @property
    def long_delay_max(self) -> float:
        """The longest one-way delay a faulty network may add."""
        return self.long_delay_fraction * self.timing.renew_deadline

    @property
    def longest_freeze(self) -> float:
        """The longest freeze this scenario injects."""
        if self.freeze_max is not None:
            return self.freeze_max
        return SAFE_FREEZE_FRACTION * self.timing.safety_margin

    def local_to_real(self, local_seconds: float) -> float:
        """The longest real time a local duration can take on the slowest allowed clock."""
        return local_seconds / (1 - self.clock_drift)

    def liveness_bound(self) -> float:
        """How long after the faults have settled a leader's work is running, at the latest.

        Count from the quiet instant Q: the last fault is over (the last crash may be of the
        leader, at Q itself), every message sent during the faults has arrived, and every
        request sent then has been answered or timed out. Every crashed node has restarted, so
        some follower other than the last holder is running and polling.

        1. If some node keeps leading past Q, its work runs (that is the goal). Otherwise the
           last renewal of the lease lands at most one round trip after Q (sent just before
           Q by a leader that then misses its deadline), so the record is free by
           ``Q + ttl + 1 round trip`` by the store's clock, which is real time.
        2. A follower looks again at most ``retry`` (local, so ``retry / (1 - drift)`` real)
           after each answer, and each look lands one round trip after the previous one
           answered; so a look lands on the free record within ``retry / (1 - drift)`` plus
           one round trip.
        3. The answer, the claim and its answer take one and a half round trips; a claim that
           loses its compare-and-set to the old holder's late release costs one more look and
           claim, two round trips; the claim that wins is answered long before its deadline.
        4. The work starts within ``start_delay_max`` of ``Elected``.

        Adding up: ``ttl + retry / (1 - drift) + 5.5 round trips + start_delay_max``, rounded
        to 6 round trips. It is the design's "ttl + heartbeat + max reply delay" spelled out
        (``retry == heartbeat`` in the default proportions).
        """
        round_trip = 2 * self.delay_max
        return (
            self.timing.ttl
            + self.local_to_real(self.timing.retry)
            + LIVENESS_ROUND_TRIPS * round_trip
            + self.start_delay_max
        )

    def handover_bound(self) -> float:
        """How long after a gracefully stopped leader's work ends the next leader's work starts.

        The release leaves when the old work has stopped and arrives half a round trip later;
        every follower looks again within ``retry / (1 - drift)`` real plus a round trip of its
        previous look; the claim takes one and a half round trips; the work starts within
        ``start_delay_max``. Notification only makes this faster.
        """
        round_trip = 2 * self.delay_max
        return (
            self.local_to_real(self.timing.retry) + HANDOVER_ROUND_TRIPS * round_trip + self.start_delay_max
        )

    def quiet_after(self) -> float:
        """How long after a fault window ends every message and timeout from it has settled.

        A request's timeout is at most ``renew_deadline`` local, which is longer than any delay.
        """
        return self.local_to_real(self.timing.renew_deadline) + self.delay_max


# ---- what the run records ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tenure:
    """Master work of ``node_id`` under ``token``, running in real time ``[start, end)``."""

    node_id: str
    token: int
    start: float
    end: float
    finished: bool = True


@dataclass(frozen=True, slots=True)
class Freeze:
    """``node_id`` processed nothing in real time ``[start, end)``."""

    node_id: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two tenures running at once; ``older`` started first."""

    older: Tenure
    newer: Tenure

    @property
    def seconds(self) -> float:
        """How long both ran."""
        return min(self.older.end, self.newer.end) - self.newer.start

    def __str__(self) -> str:
        return (
            f"{self.older.node_id} (token {self.older.token}, until {self.older.end:.6f}) overlaps "
            f"{self.newer.node_id} (token {self.newer.token}, from {self.newer.start:.6f}) "
            f"for {self.seconds * 1000:.3f} ms"
        )


def find_overlaps(tenures: Iterable[Tenure]) -> list[Overlap]:
    """Every pair of tenures that ran at the same instant of real time."""
    found: list[Overlap] = []
    running: list[Tenure] = []
    for tenure in sorted(tenures, key=lambda t: (t.start, t.token)):
        running = [other for other in running if other.end > tenure.start]
        found.extend(Overlap(other, tenure) for other in running)
        running.append(tenure)
    return found


def token_order_problems(tenures: Iterable[Tenure]) -> list[str]:
    """Fencing: a tenure that started later must carry a strictly greater token."""
    ordered = sorted(tenures, key=lambda t: t.start)
    return [
        f"{later.node_id} started at {later.start:.6f} with token {later.token}, not above "
        f"token {earlier.token} of {earlier.node_id} which started at {earlier.start:.6f}"
        for earlier, later in itertools.pairwise(ordered)
        if later.token <= earlier.token
    ]


def unexplained_overlaps(overlaps: Iterable[Overlap], freezes: Sequence[Freeze], grace: float) -> list[str]:
    """Overlaps that a freeze longer than the margin does not excuse.

    The only overlap the design allows is old work outliving its lease because its node was
    frozen: the older token's work, overlapping a newer token's, stopping at most ``grace``
    after its node ran again.
    """
    problems: list[str] = []
    for overlap in overlaps:
        older, newer = overlap.older, overlap.newer
        if older.token >= newer.token:
            problems.append(f"{overlap}: the older work does not carry the older token")
            continue
        excused = any(
            freeze.node_id == older.node_id
            and freeze.start < older.end
            and older.end <= freeze.end + grace + EPSILON
            for freeze in freezes
        )
        if not excused:
            problems.append(f"{overlap}: no freeze of {older.node_id} explains it")
    return problems


@dataclass(frozen=True, slots=True)
class LivenessCheck:
    """After faults settled at ``quiet_from``, some work must be running at ``due``.

    ``crashed`` is true when the leader was crashed at ``quiet_from``, the last fault.
    """

    quiet_from: float
    due: float
    stop_at: float
    crashed: bool


@dataclass(frozen=True, slots=True)
class Handover:
    """A graceful stop of ``node_id`` requested at ``requested_at``."""

    node_id: str
    token: int
    requested_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What one run recorded, and the verdict of every check on it."""

    seed: int
    steps: int
    sim_seconds: float
    scenario: Scenario
    tenures: tuple[Tenure, ...]
    freezes: tuple[Freeze, ...]
    overlaps: tuple[Overlap, ...]
    unexplained: tuple[str, ...]
    token_order: tuple[str, ...]
    liveness: tuple[str, ...]
    recoveries: tuple[float, ...]
    failovers: tuple[float, ...]
    handovers: tuple[float, ...]
    machine: tuple[str, ...]
    counts: dict[str, int]

    @property
    def mutual_exclusion_holds(self) -> bool:
        """No two tenures ever ran at once."""
        return not self.overlaps

    def safety_problems(self) -> list[str]:
        """Everything that breaks fencing, or an overlap no freeze explains."""
        return [*self.machine, *self.token_order, *self.unexplained]

    def summary(self) -> str:
        """One paragraph for a human."""
        counted = ", ".join(f"{name} {value}" for name, value in sorted(self.counts.items()))
        recovery = max(self.recoveries, default=float("nan"))
        failover = max(self.failovers, default=float("nan"))
        handover = max(self.handovers, default=float("nan"))
        return (
            f"seed {self.seed}: {self.steps} events over {self.sim_seconds:.1f} simulated s; "
            f"{len(self.tenures)} tenures, {len(self.overlaps)} overlaps "
            f"({len(self.unexplained)} unexplained), {len(self.token_order)} token-order and "
            f"{len(self.machine)} machine problems; {len(self.recoveries)} recoveries "
            f"(slowest {recovery:.3f} s), {len(self.failovers)} failovers after a leader crash "
            f"(slowest {failover:.3f} s), {len(self.handovers)} handovers (slowest {handover:.3f} s), "
            f"{len(self.liveness)} liveness failures; {counted}"
        )


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wake:
    slot: int
    incarnation: int
    generation: int


@dataclass(frozen=True, slots=True)
class _Reply:
    slot: int
    incarnation: int
    request: int
    answer: Callable[[float], Input]


@dataclass(frozen=True, slots=True)
class _Timeout:
    slot: int
    incarnation: int
    request: int


@dataclass(frozen=True, slots=True)
class _Notify:
    slot: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _StopRequest:
    slot: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _Listening:
    """The node's listener is subscribed (again)."""

    slot: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _ListenerFailed:
    """The node's listener found its connection broken (a notice to it was lost)."""

    slot: int
    incarnation: int


_NodeInput: TypeAlias = _Wake | _Reply | _Timeout | _Notify | _StopRequest
_Request: TypeAlias = Observe | SendClaim | SendRenew | SendRelease


@dataclass(frozen=True, slots=True)
class _Arrive:
    slot: int
    incarnation: int
    request: int
    command: _Request
    sent_at: float


@dataclass(frozen=True, slots=True)
class _Unblock:
    slot: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _WorkStart:
    slot: int
    incarnation: int
    token: int


@dataclass(frozen=True, slots=True)
class _Restart:
    slot: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class _Fault:
    window: int


@dataclass(frozen=True, slots=True)
class _WindowStart:
    pass


@dataclass(frozen=True, slots=True)
class _WindowEnd:
    window: int


@dataclass(frozen=True, slots=True)
class _Settled:
    window: int


@dataclass(frozen=True, slots=True)
class _GracefulStop:
    pass


_Event: TypeAlias = (
    _NodeInput
    | _Arrive
    | _Unblock
    | _WorkStart
    | _Restart
    | _Fault
    | _WindowStart
    | _WindowEnd
    | _Settled
    | _GracefulStop
    | _Listening
    | _ListenerFailed
)


# ---- nodes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Clock:
    """``local = offset + rate * real``."""

    offset: float
    rate: float

    def local(self, real: float) -> float:
        return self.offset + self.rate * real

    def real(self, local: float) -> float:
        """The first real instant at which this clock reads at least ``local``."""
        real = (local - self.offset) / self.rate
        while self.local(real) < local:
            real = math.nextafter(real, math.inf)
        return real


@dataclass(slots=True)
class _Pending:
    sent_at: float
    fail: Callable[[float], Input]


@dataclass(slots=True)
class _Work:
    token: int
    started: float | None = None


@dataclass(slots=True)
class _Node:
    slot: int
    incarnation: int
    config: Config
    clock: _Clock
    state: State
    alive: bool = True
    blocked: bool = False
    blocked_until: float = 0.0
    stopping: bool = False
    generation: int = 0
    inbox: deque[_NodeInput] = field(default_factory=deque)
    deferred: tuple[Command, ...] = ()
    pending: dict[int, _Pending] = field(default_factory=dict)
    work: _Work | None = None
    thawed_at: float = -math.inf
    #: Since when (local clock) the listener has been up; None while it is down.
    heard_since: float | None = None

    @property
    def node_id(self) -> str:
        return self.config.me.node_id


_KINDS: dict[type, str] = {Observe: "observe", SendClaim: "claim", SendRenew: "renew"}


def _failure(kind: str, sent_at: float, problem: str) -> Callable[[float], Input]:
    """The answer the runtime gives the machine when ``kind`` failed with ``problem``."""
    error = Failure(BackendError(STORE_URL, f"{kind} {problem}"))
    if kind == "observe":
        return partial(Observed, error, sent_at)
    if kind == "claim":
        return partial(ClaimResult, error, sent_at)
    return partial(RenewResult, error, sent_at)


# ---- the simulator ------------------------------------------------------------------------


class Simulation:
    """One seeded run. Use :func:`run` unless you need to poke at the pieces."""

    def __init__(self, seed: int, scenario: Scenario) -> None:
        if scenario.nodes < 2:
            raise ValueError("a simulation needs at least two nodes")
        self.seed = seed
        self.scenario = scenario
        self.timing = scenario.timing
        self.random = random.Random(seed)
        self.now = 0.0
        self.steps = 0
        self._queue: list[tuple[float, int, _Event]] = []
        self._sequence = 0
        self.table: dict[str, LockRecord] = {}
        self.nodes: list[_Node] = []
        self.tenures: list[Tenure] = []
        self.freezes: list[Freeze] = []
        self.machine: list[str] = []
        self.checks: list[LivenessCheck] = []
        self.handovers: list[Handover] = []
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "crashes",
                "freezes",
                "long delays",
                "losses",
                "timeouts",
                "elections",
                "renewals",
                "warnings",
                "graceful stops",
                "final crashes",
                "errors",
                "blips",
                "clock steps",
                "clock steps detected",
                "looks",
                "listener failures",
            ),
            0,
        )
        self.store_offset = 0.0
        self.window = 0
        self.faulty = False
        self.last_thaw = 0.0
        self.last_blip = 0.0
        self.blip_until = [0.0] * scenario.nodes
        for slot in range(scenario.nodes):
            self.nodes.append(self._spawn(slot, 0))
        self._at(0.0, _WindowStart())

    # -- plumbing ---------------------------------------------------------------------------

    def _at(self, when: float, event: _Event) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (max(when, self.now), self._sequence, event))

    def _count(self, what: str) -> None:
        self.counts[what] += 1

    def _spawn(self, slot: int, incarnation: int) -> _Node:
        drift = self.scenario.clock_drift
        pick = self.random.random()
        if pick < _EXTREME_RATE_CHANCE / 2:
            rate = 1 - drift
        elif pick < _EXTREME_RATE_CHANCE:
            rate = 1 + drift
        else:
            rate = self.random.uniform(1 - drift, 1 + drift)
        clock = _Clock(offset=self.random.uniform(0, CLOCK_OFFSET_RANGE), rate=rate)
        me = NodeIdentity(node_id=f"n{slot}.{incarnation}", host=f"host{slot}", pid=1000 + incarnation)
        node = _Node(
            slot=slot,
            incarnation=incarnation,
            config=Config(name=LOCK_NAME, me=me, timing=self.timing),
            clock=clock,
            state=initial(clock.local(self.now)),
        )
        self._at(self.now, _Wake(slot, incarnation, node.generation))
        if self.scenario.notify:
            self._at(self.now + self.random.uniform(0, self.timing.retry), _Listening(slot, incarnation))
        return node

    def _delay(self, slot: int) -> float | None:
        """A one-way delay to or from ``slot``'s host, or None when the message is lost.

        While that host's network blips, every message is either lost or slow.
        """
        scenario = self.scenario
        if self.now < self.blip_until[slot]:
            if self.random.random() < 1 / 2:
                self._count("losses")
                return None
            self._count("long delays")
            return self.random.uniform(scenario.delay_max, scenario.long_delay_max)
        if self.faulty:
            if self.random.random() < scenario.loss_chance:
                self._count("losses")
                return None
            if self.random.random() < scenario.long_delay_chance:
                self._count("long delays")
                return self.random.uniform(scenario.delay_max, scenario.long_delay_max)
        return self.random.uniform(scenario.delay_min, scenario.delay_max)

    def _node(self, slot: int, incarnation: int) -> _Node | None:
        node = self.nodes[slot]
        if node.alive and node.incarnation == incarnation:
            return node
        return None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, steps: int) -> Report:
        """Process ``steps`` events, then check everything that was recorded."""
        while self.steps < steps and self._queue:
            when, _, event = heapq.heappop(self._queue)
            self.now = when
            self.steps += 1
            self._dispatch(event)
        return self._report()

    def _dispatch(self, event: _Event) -> None:
        match event:
            case _Wake() | _Reply() | _Timeout() | _Notify() | _StopRequest():
                self._deliver(event)
            case _Arrive():
                self._arrive(event)
            case _Unblock(slot=slot, incarnation=incarnation):
                node = self._node(slot, incarnation)
                if node is not None and node.blocked and self.now >= node.blocked_until:
                    self._unblock(node)
            case _WorkStart(slot=slot, incarnation=incarnation, token=token):
                node = self._node(slot, incarnation)
                if node is not None and node.work is not None and node.work.token == token:
                    node.work.started = self.now
            case _Restart(slot=slot, incarnation=incarnation):
                node = self.nodes[slot]
                if not node.alive and node.incarnation == incarnation:
                    self.nodes[slot] = self._spawn(slot, incarnation + 1)
            case _Fault(window=window):
                if self.faulty and window == self.window:
                    self._fault()
            case _WindowStart():
                self._window_start()
            case _WindowEnd(window=window):
                self._window_end(window)
            case _Settled(window=window):
                self._settled(window)
            case _GracefulStop():
                self._graceful_stop()
            case _Listening(slot=slot, incarnation=incarnation):
                node = self._node(slot, incarnation)
                if node is not None:
                    node.heard_since = node.clock.local(self.now)
            case _ListenerFailed(slot=slot, incarnation=incarnation):
                node = self._node(slot, incarnation)
                if node is not None and node.heard_since is not None:
                    self._count("listener failures")
                    node.heard_since = None
                    self._deliver(_Notify(slot, incarnation))
                    back = self.now + self.random.uniform(0, self.timing.retry)
                    self._at(back, _Listening(slot, incarnation))

    # -- a node handling its inputs ---------------------------------------------------------

    def _deliver(self, event: _NodeInput) -> None:
        node = self._node(event.slot, event.incarnation)
        if node is None:
            return
        if node.blocked or node.inbox:
            node.inbox.append(event)
            return
        self._process(node, event)

    def _process(self, node: _Node, event: _NodeInput) -> None:
        now = node.clock.local(self.now)
        given: Input
        match event:
            case _Wake(generation=generation):
                if generation != node.generation:
                    return
                given = Tick(now)
            case _Reply(request=request, answer=answer):
                if node.pending.pop(request, None) is None:
                    return
                given = answer(now)
                if isinstance(given, Observed) and node.heard_since is not None:
                    given = replace(given, notices=node.heard_since <= given.sent_at)
            case _Timeout(request=request):
                pending = node.pending.pop(request, None)
                if pending is None:
                    return
                self._count("timeouts")
                given = pending.fail(now)
            case _Notify():
                given = Notified(now)
            case _StopRequest():
                given = StopRequested(now)
        node.state, commands = step(node.config, node.state, given)
        self._execute(node, commands)
        self._leave_if_stopped(node)

    def _execute(self, node: _Node, commands: tuple[Command, ...]) -> None:
        for index, command in enumerate(commands):
            match command:
                case Observe() | SendClaim() | SendRenew():
                    self._send(node, command)
                case SendRelease():
                    self._send_release(node, command)
                case Announce(event=Elected() as elected):
                    self._elected(node, elected)
                case Announce(event=Demoted() as demoted):
                    if self._demoted(node, demoted):
                        node.deferred = commands[index + 1 :]
                        return
                case Announce(event=Renewed()):
                    self._count("renewals")
                case Warn(message=message):
                    self._count("warnings")
                    if "clock stepped" in message:
                        self._count("clock steps detected")
                case WaitUntil(at=at):
                    node.generation += 1
                    self._at(node.clock.real(at), _Wake(node.slot, node.incarnation, node.generation))

    def _send(self, node: _Node, command: Observe | SendClaim | SendRenew) -> None:
        sent_at = node.clock.local(self.now)
        if node.pending:
            self.machine.append(
                f"{node.node_id} sent {type(command).__name__} at {self.now:.6f} with a request "
                "still in flight"
            )
        self._sequence += 1
        request = self._sequence
        node.pending[request] = _Pending(sent_at, _failure(_KINDS[type(command)], sent_at, "timed out"))
        if isinstance(command, Observe):
            self._count("looks")
        self._at(node.clock.real(sent_at + command.timeout), _Timeout(node.slot, node.incarnation, request))
        delay = self._delay(node.slot)
        if delay is not None:
            self._at(self.now + delay, _Arrive(node.slot, node.incarnation, request, command, sent_at))

    def _send_release(self, node: _Node, command: SendRelease) -> None:
        delay = self._delay(node.slot)
        if delay is not None:
            self._at(self.now + delay, _Arrive(node.slot, node.incarnation, 0, command, 0.0))

    def _elected(self, node: _Node, elected: Elected) -> None:
        if node.work is not None:
            self.machine.append(
                f"{node.node_id} elected with token {elected.token} while its work under token "
                f"{node.work.token} was not stopped"
            )
        self._count("elections")
        node.work = _Work(elected.token)
        start = self.now + self.random.uniform(0, self.scenario.start_delay_max)
        self._at(start, _WorkStart(node.slot, node.incarnation, elected.token))

    def _demoted(self, node: _Node, demoted: Demoted) -> bool:
        """Stop the work; True when the node must wait for it before its next command."""
        work = node.work
        if work is None or work.token != demoted.token:
            self.machine.append(f"{node.node_id} demoted from token {demoted.token} it was not working under")
            return False
        if work.started is None:
            node.work = None
            return False
        grace = self.timing.grace
        if self.random.random() < self.scenario.sigkill_chance:
            delay = grace
        else:
            delay = self.random.uniform(0, grace)
        node.stopping = True
        self._block(node, self.now + delay)
        return True

    def _block(self, node: _Node, until: float) -> None:
        node.blocked = True
        node.blocked_until = until
        self._at(until, _Unblock(node.slot, node.incarnation))

    def _unblock(self, node: _Node) -> None:
        node.blocked = False
        if node.stopping:
            node.stopping = False
            self._end_work(node)
        deferred, node.deferred = node.deferred, ()
        self._execute(node, deferred)
        while node.inbox and not node.blocked:
            self._process(node, node.inbox.popleft())
        self._leave_if_stopped(node)

    def _end_work(self, node: _Node) -> None:
        work = node.work
        node.work = None
        if work is not None and work.started is not None:
            self.tenures.append(Tenure(node.node_id, work.token, work.started, self.now))

    def _leave_if_stopped(self, node: _Node) -> None:
        if node.alive and isinstance(node.state, Stopped) and not node.blocked and not node.inbox:
            node.alive = False
            self._at(self.now + self.timing.ttl, _Restart(node.slot, node.incarnation))

    # -- the store --------------------------------------------------------------------------

    def _arrive(self, event: _Arrive) -> None:
        """Run the statement at the store's (real) time and send the answer back.

        In a fault window the store sometimes answers with an error, and half of those errors
        come after the statement took effect (the commit happened, the reply did not).
        """
        now = self.now
        command = event.command
        answer: Callable[[float], Input]
        if self.faulty and self.random.random() < self.scenario.error_chance:
            self._count("errors")
            if self.random.random() < 1 / 2:
                self._apply(command, event.sent_at)
            if isinstance(command, SendRelease):
                return
            answer = _failure(_KINDS[type(command)], event.sent_at, "failed: connection reset")
        else:
            applied = self._apply(command, event.sent_at)
            if applied is None:
                return
            answer = applied
        delay = self._delay(event.slot)
        if delay is not None:
            self._at(now + delay, _Reply(event.slot, event.incarnation, event.request, answer))

    def _apply(self, command: _Request, sent_at: float) -> Callable[[float], Input] | None:
        """One atomic statement on the table at the store's time; None for a release.

        The store's clock is real time plus any steps the scenario injected.
        """
        now = self.now + self.store_offset
        match command:
            case Observe(name=name):
                return partial(Observed, Success(Observation(self.table.get(name), now)), sent_at)
            case SendClaim(claim=claim):
                claimed = claim_in(self.table, claim, now)
                if isinstance(claimed, Success):
                    self.table[claim.name] = claimed.unwrap()
                return partial(ClaimResult, claimed, sent_at)
            case SendRenew(record=record, ttl=ttl):
                renewed = renew_in(self.table, record, ttl, now)
                if isinstance(renewed, Success):
                    self.table[record.name] = renewed.unwrap()
                return partial(RenewResult, renewed, sent_at)
            case SendRelease(record=record):
                released = release_in(self.table, record, now)
                if released is not None:
                    self.table[record.name] = released
                    if self.scenario.notify:
                        self._notify_all()
                return None

    def _notify_all(self) -> None:
        for node in self.nodes:
            if node.alive:
                delay = self._delay(node.slot)
                if delay is not None:
                    self._at(self.now + delay, _Notify(node.slot, node.incarnation))
                else:
                    noticed = self.now + self.random.uniform(0, self.timing.retry)
                    self._at(noticed, _ListenerFailed(node.slot, node.incarnation))

    # -- faults -----------------------------------------------------------------------------

    def _window_start(self) -> None:
        self.window += 1
        self.faulty = True
        if self.scenario.clock_step and self.window > 1:
            self.store_offset += self.scenario.clock_step
            self._count("clock steps")
        end = self.now + self.scenario.fault_window_ttls * self.timing.ttl
        self._at(end, _WindowEnd(self.window))
        self._next_fault()

    def _next_fault(self) -> None:
        scenario = self.scenario
        rate = (
            scenario.crashes_per_ttl + scenario.freezes_per_ttl + scenario.blips_per_ttl
        ) / self.timing.ttl
        if rate > 0:
            self._at(self.now + self.random.expovariate(rate), _Fault(self.window))

    def _leader(self) -> _Node | None:
        for node in self.nodes:
            if node.alive and isinstance(node.state, Leader):
                return node
        return None

    def _fault(self) -> None:
        scenario = self.scenario
        leader = self._leader()
        alive = [node for node in self.nodes if node.alive]
        if leader is not None and self.random.random() < scenario.leader_bias:
            target: _Node | None = leader
        else:
            target = self.random.choice(alive) if alive else None
        pick = self.random.random() * (
            scenario.crashes_per_ttl + scenario.freezes_per_ttl + scenario.blips_per_ttl
        )
        if target is not None:
            if pick < scenario.crashes_per_ttl:
                self._crash(target)
            elif pick < scenario.crashes_per_ttl + scenario.freezes_per_ttl:
                if self.now >= target.thawed_at + self.timing.ttl:
                    self._freeze(target)
            else:
                self._blip(target)
        self._next_fault()

    def _blip(self, node: _Node) -> None:
        """The node's network loses or delays everything for up to one ttl."""
        self._count("blips")
        end = self.now + self.random.uniform(0, self.timing.ttl)
        self.blip_until[node.slot] = max(self.blip_until[node.slot], end)
        self.last_blip = max(self.last_blip, end)

    def _crash(self, node: _Node) -> None:
        """Kill the node: its work dies with it, and its messages on the wire still arrive."""
        self._count("crashes")
        self._end_work(node)
        node.alive = False
        node.stopping = False
        node.blocked = False
        node.inbox.clear()
        node.pending.clear()
        node.deferred = ()
        downtime = self.random.uniform(0, self.scenario.downtime_max_ttls * self.timing.ttl)
        self._at(self.now + downtime, _Restart(node.slot, node.incarnation))

    def _freeze(self, node: _Node) -> None:
        """Stop the node's elector (and supervisor) for a while; its work runs on regardless.

        A node already waiting for its work to stop waits that much longer: the frozen
        supervisor cannot send the SIGKILL either.
        """
        longest = self.scenario.longest_freeze
        duration = self.random.uniform(longest / 2, longest)
        self._count("freezes")
        node.thawed_at = self.now + duration
        self.last_thaw = max(self.last_thaw, node.thawed_at)
        self.freezes.append(Freeze(node.node_id, self.now, node.thawed_at))
        resume = node.blocked_until + duration if node.blocked else node.thawed_at
        self._block(node, resume)

    def _window_end(self, window: int) -> None:
        if window != self.window:
            return
        self.faulty = False
        for node in self.nodes:
            if not node.alive:
                self.nodes[node.slot] = self._spawn(node.slot, node.incarnation + 1)
        quiet = max(max(self.now, self.last_blip) + self.scenario.quiet_after(), self.last_thaw)
        self._at(quiet, _Settled(window))

    def _settled(self, window: int) -> None:
        """The faults are over; sometimes one last crash of the leader, then check liveness."""
        leader = self._leader()
        crashed = leader is not None and self.random.random() < self.scenario.final_crash_chance
        if crashed and leader is not None:
            self._count("final crashes")
            self._crash(leader)
            self.nodes[leader.slot] = self._spawn(leader.slot, leader.incarnation + 1)
        due = self.now + self.scenario.liveness_bound()
        stop_at = due + self.random.uniform(0, self.timing.heartbeat)
        self.checks.append(LivenessCheck(self.now, due, stop_at, crashed))
        self._at(stop_at, _GracefulStop())

    def _graceful_stop(self) -> None:
        leader = next((node for node in self.nodes if node.alive and node.work is not None), None)
        if leader is not None and leader.work is not None and not leader.blocked:
            self._count("graceful stops")
            self.handovers.append(Handover(leader.node_id, leader.work.token, self.now))
            self._deliver(_StopRequest(leader.slot, leader.incarnation))
        settle = self.timing.grace + self.scenario.handover_bound() + self.timing.heartbeat
        self._at(self.now + settle, _WindowStart())

    # -- the verdict ------------------------------------------------------------------------

    def _report(self) -> Report:
        tenures = list(self.tenures)
        for node in self.nodes:
            work = node.work
            if node.alive and work is not None and work.started is not None:
                tenures.append(Tenure(node.node_id, work.token, work.started, self.now, finished=False))
        tenures.sort(key=lambda t: t.start)
        overlaps = find_overlaps(tenures)
        liveness, recoveries, failovers = self._liveness(tenures)
        handover_problems, handovers = self._handovers(tenures)
        return Report(
            seed=self.seed,
            steps=self.steps,
            sim_seconds=self.now,
            scenario=self.scenario,
            tenures=tuple(tenures),
            freezes=tuple(self.freezes),
            overlaps=tuple(overlaps),
            unexplained=tuple(unexplained_overlaps(overlaps, self.freezes, self.timing.grace)),
            token_order=tuple(token_order_problems(tenures)),
            liveness=(*liveness, *handover_problems),
            recoveries=tuple(recoveries),
            failovers=tuple(failovers),
            handovers=tuple(handovers),
            machine=tuple(self.machine),
            counts=dict(self.counts),
        )

    def _liveness(self, tenures: Sequence[Tenure]) -> tuple[list[str], list[float], list[float]]:
        problems: list[str] = []
        recoveries: list[float] = []
        failovers: list[float] = []
        for check in self.checks:
            if check.stop_at > self.now:
                continue
            covering = [t for t in tenures if t.start <= check.due < t.end]
            if not covering:
                problems.append(
                    f"no leader's work was running at {check.due:.6f}, "
                    f"{self.scenario.liveness_bound():.3f} s after the faults settled "
                    f"at {check.quiet_from:.6f}"
                )
                continue
            tenure = covering[0]
            recoveries.append(max(0.0, tenure.start - check.quiet_from))
            if check.crashed:
                failovers.append(tenure.start - check.quiet_from)
            if tenure.end < check.stop_at:
                problems.append(
                    f"{tenure.node_id} (token {tenure.token}) stopped at {tenure.end:.6f} without faults, "
                    f"before the graceful stop at {check.stop_at:.6f}"
                )
        return problems, recoveries, failovers

    def _handovers(self, tenures: Sequence[Tenure]) -> tuple[list[str], list[float]]:
        problems: list[str] = []
        measured: list[float] = []
        bound = self.scenario.handover_bound()
        for handover in self.handovers:
            old = next(
                (t for t in tenures if t.node_id == handover.node_id and t.token == handover.token), None
            )
            if old is None or old.end + bound > self.now:
                continue
            successor = next((t for t in tenures if t.start >= old.end), None)
            if successor is None or successor.start > old.end + bound:
                when = "never" if successor is None else f"at {successor.start:.6f}"
                problems.append(
                    f"after {handover.node_id} stopped gracefully at {old.end:.6f} the next leader "
                    f"started {when}, later than the {bound:.3f} s handover bound"
                )
                continue
            measured.append(successor.start - old.end)
        return problems, measured


def run(seed: int, steps: int, scenario: Scenario | None = None) -> Report:
    """Simulate ``steps`` events of a cluster from ``seed`` and check what happened."""
    return Simulation(seed, Scenario() if scenario is None else scenario).run(steps)


def main(argv: Sequence[str] | None = None) -> int:
    """Run seeds from the command line (``python -m tests.core.simulation --help``).

    Prints one summary per seed and every problem found; exits 1 if any run broke a guarantee.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.core.simulation", description=main.__doc__)
    parser.add_argument("--seeds", type=int, default=4, help="how many seeds, from --first (default 4)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="events per seed (default 10^6)")
    parser.add_argument("--notify", action="store_true", help="the store notifies releases")
    parser.add_argument(
        "--clock-step",
        type=float,
        default=0.0,
        help="store clock step per fault window",
    )
    options = parser.parse_args(argv)
    scenario = Scenario(notify=options.notify, clock_step=options.clock_step)
    failed = False
    for seed in range(options.first, options.first + options.seeds):
        report = run(seed, options.steps, scenario)
        print(report.summary())
        problems = [*report.safety_problems(), *map(str, report.overlaps), *report.liveness]
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
