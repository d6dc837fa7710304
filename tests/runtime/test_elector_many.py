"""One elector, many names: independent machines on one loop, calls batched on one I/O thread.

The backend is ``memory://`` (the store model that passes the contract suite) wrapped in a
counter of the calls that reach it; the elections, deadlines and batches are the real ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from returns.io import IOResult

from gomaster import Timing
from gomaster.backends import connect
from gomaster.backends.base import LockBackend, Observations, Renewals
from gomaster.core.election import Config
from gomaster.core.errors import BackendError
from gomaster.core.events import Announcement, Demoted, Elected, Renewed
from gomaster.core.record import LockRecord
from gomaster.runtime._io import performed
from gomaster.runtime.elector import Election, Elector, Hold
from tests.helpers import identity

TIMING = Timing.from_ttl(1.0)
WAIT = 5.0


@dataclass
class _Counting:
    """A real backend whose batched and single calls are counted."""

    backend: LockBackend
    calls: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _count(self, what: str, size: int) -> None:
        with self.lock:
            self.calls.append((what, size))

    def observe(self, name: str, timeout: float) -> Any:
        self._count("observe", 1)
        return self.backend.observe(name, timeout)

    def renew(self, record: LockRecord, ttl: float, timeout: float) -> Any:
        self._count("renew", 1)
        return self.backend.renew(record, ttl, timeout)

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        self._count("observe_many", len(names))
        return self.backend.observe_many(names, timeout)

    def renew_many(
        self, records: Sequence[LockRecord], ttl: float, timeout: float
    ) -> IOResult[Renewals, BackendError]:
        self._count("renew_many", len(records))
        return self.backend.renew_many(records, ttl, timeout)

    def of(self, *kinds: str) -> list[tuple[str, int]]:
        with self.lock:
            return [c for c in self.calls if c[0] in kinds]


@dataclass
class _Node:
    elector: Elector
    elections: dict[str, Election]
    events: dict[str, list[Announcement]]
    thread: threading.Thread


def _wait(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def counting() -> _Counting:
    return _Counting(connect("memory://"))


def _start(
    backend: Any, names: Sequence[str], hold: Callable[[str, Announcement], Hold | None] | None = None
) -> _Node:
    elector = Elector(backend)
    me = identity()
    events: dict[str, list[Announcement]] = {name: [] for name in names}

    def announcer(name: str) -> Callable[[Announcement], Hold | None]:
        def announce(event: Announcement) -> Hold | None:
            events[name].append(event)
            return hold(name, event) if hold is not None else None

        return announce

    elections = {
        name: elector.join(Config(name=name, me=me, timing=TIMING), announcer(name)) for name in names
    }
    thread = threading.Thread(target=elector.run, daemon=True)
    thread.start()
    return _Node(elector, elections, events, thread)


@pytest.fixture
def stop_nodes() -> Iterator[list[_Node]]:
    nodes: list[_Node] = []
    yield nodes
    for node in nodes:
        node.elector.stop()
        node.thread.join(WAIT)


def test_every_name_is_elected_and_their_renewals_go_out_together(
    counting: _Counting, stop_nodes: list[_Node]
) -> None:
    names = [f"job-{i}" for i in range(20)]
    node = _start(counting, names)
    stop_nodes.append(node)
    _wait("every name elected", lambda: all(e.status().role == "leader" for e in node.elections.values()))
    before = len(counting.of("renew", "renew_many"))
    time.sleep(4 * TIMING.heartbeat)
    renewals = counting.of("renew", "renew_many")[before:]
    renewed = sum(size for _, size in renewals)
    assert renewed >= 3 * len(names), renewals
    # 20 names renewed about 4 times each took a handful of round trips, not 80.
    assert len(renewals) <= renewed / 5, renewals


def test_a_follower_looks_at_all_its_names_in_few_round_trips(
    counting: _Counting, stop_nodes: list[_Node]
) -> None:
    names = [f"job-{i}" for i in range(20)]
    leader = _start(counting.backend, names)  # another node on the same store, not counted
    stop_nodes.append(leader)
    _wait("the first node leads", lambda: all(e.status().role == "leader" for e in leader.elections.values()))
    follower = _start(counting, names)
    stop_nodes.append(follower)
    time.sleep(4 * TIMING.retry)
    assert all(e.status().role == "follower" for e in follower.elections.values())
    looks = counting.of("observe", "observe_many")
    looked = sum(size for _, size in looks)
    assert looked >= 2 * len(names), looks
    assert len(looks) <= looked / 5, looks


def test_a_demotion_held_for_its_work_delays_neither_the_other_names_nor_their_renewals(
    stop_nodes: list[_Node],
) -> None:
    backend = connect("memory://")
    holding = threading.Event()

    def hold(name: str, event: Announcement) -> Hold | None:
        if name == "slow" and isinstance(event, Demoted):
            holding.set()
            return Hold(until=time.monotonic() + 60)  # released only by resume()
        return None

    node = _start(backend, ["slow", "quick"], hold)
    stop_nodes.append(node)
    _wait("both elected", lambda: all(e.status().role == "leader" for e in node.elections.values()))
    node.elections["slow"].stop()
    _wait("slow demoted", holding.is_set)
    renewed_before = sum(isinstance(e, Renewed) for e in node.events["quick"])
    time.sleep(3 * TIMING.heartbeat)
    assert sum(isinstance(e, Renewed) for e in node.events["quick"]) >= renewed_before + 2
    assert node.elections["quick"].status().role == "leader"
    # The held name's release has not been sent: its record still names this node.
    seen = _record(backend, "slow")
    assert seen is not None and seen.holder == node.elections["slow"].config.me.node_id and not seen.released
    node.elections["slow"].resume()
    _wait("the release goes out on resume", lambda: _released(backend, "slow"))


def _record(backend: LockBackend, name: str) -> LockRecord | None:
    return performed(backend.observe(name, 1.0)).unwrap().record


def _released(backend: LockBackend, name: str) -> bool:
    seen = _record(backend, name)
    return seen is not None and seen.released


def test_stopping_the_elector_releases_every_name_and_ends_its_loop(stop_nodes: list[_Node]) -> None:
    backend = connect("memory://")
    names = ["a", "b", "c"]
    node = _start(backend, names)
    _wait("every name elected", lambda: all(e.status().role == "leader" for e in node.elections.values()))
    node.elector.stop()
    node.thread.join(WAIT)
    assert not node.thread.is_alive()
    assert all(_released(backend, name) for name in names)
    assert all(isinstance(node.events[name][0], Elected) for name in names)
    assert all(isinstance(node.events[name][-1], Demoted) for name in names)


@dataclass
class _SlowClaims:
    """A real backend whose claims each take ``delay`` longer, as a loaded server's would."""

    backend: LockBackend
    delay: float

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def claim(self, claim: Any, timeout: float) -> Any:
        time.sleep(self.delay)
        return self.backend.claim(claim, timeout)


def test_renewals_never_wait_behind_a_crowd_of_claims(stop_nodes: list[_Node]) -> None:
    store = connect("memory://")
    crowd = [f"crowd-{i}" for i in range(150)]
    other = _start(store, crowd)
    _wait(
        "the other node leads the crowd",
        lambda: all(e.status().role == "leader" for e in other.elections.values()),
    )
    # Each claim takes 20 ms: the crowd's 150 claims queue up for 3 s, five renew deadlines.
    node = _start(_SlowClaims(store, 0.02), ["keep", *crowd])
    stop_nodes.append(node)
    _wait("keep is led", lambda: node.elections["keep"].status().role == "leader")
    other.elector.stop()  # releases the crowd: every name is claimed at once
    other.thread.join(WAIT)
    _wait("the crowd is taken", lambda: all(node.elections[n].status().role == "leader" for n in crowd), 15)
    assert [e for e in node.events["keep"] if isinstance(e, Demoted)] == []
    assert node.elections["keep"].status().role == "leader"
