"""A follower with live release notices looks near each expiry instead of every retry.

Real Redis (pub/sub notices). The counting wrapper only records when each look reached the
server; a listener is broken, and a holder crashed, by cutting their real connections with the
chaos proxy, never by faking an answer.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from returns.io import IOResult

from gomaster import Timing
from gomaster.backends import connect
from gomaster.backends.base import LockBackend, Observations
from gomaster.core.election import Config
from gomaster.core.errors import BackendError
from gomaster.core.events import Announcement
from gomaster.runtime import elector as elector_module
from gomaster.runtime.elector import Elector
from tests.chaos.proxy import CUT, PASS, FaultProxy, ProxyHub
from tests.helpers import identity

pytestmark = pytest.mark.redis

TIMING = Timing.from_ttl(2.0)
NAMES = [f"job-{i}" for i in range(5)]
#: The listener's wait per call, shortened so that notices are live soon after a node starts.
LISTEN_WAIT = 0.3
WAIT = 10.0
_prefixes = itertools.count()


@dataclass
class _Looks:
    """A real backend whose looks are timed as they go out, name by name."""

    backend: LockBackend
    sent: dict[str, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _mark(self, names: Sequence[str]) -> None:
        now = time.monotonic()
        with self.lock:
            for name in names:
                self.sent.setdefault(name, []).append(now)

    def observe(self, name: str, timeout: float) -> Any:
        self._mark([name])
        return self.backend.observe(name, timeout)

    def observe_many(self, names: Sequence[str], timeout: float) -> IOResult[Observations, BackendError]:
        self._mark(names)
        return self.backend.observe_many(names, timeout)

    def gaps(self, name: str, since: float, until: float = float("inf")) -> list[float]:
        """The times between two looks at ``name`` that both went out in ``[since, until]``."""
        with self.lock:
            times = [t for t in self.sent.get(name, []) if since <= t <= until]
        return [b - a for a, b in itertools.pairwise(times)]


@dataclass
class _ListensElsewhere:
    """A real backend whose release notices come over another real backend (a connection of
    its own, which a test can cut) and everything else over the first."""

    steps: Any
    listener: LockBackend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.steps, name)

    def wait_for_releases(self, names: Collection[str], timeout: float) -> Any:
        return self.listener.wait_for_releases(names, timeout)


@dataclass
class _Quiet:
    """A real backend that says it cannot notify: its elector polls, as on a SQL backend."""

    backend: LockBackend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    @property
    def notifies(self) -> bool:
        return False


@dataclass
class _Node:
    elector: Elector
    thread: threading.Thread

    def roles(self) -> set[str]:
        return {e.status().role for e in self.elector.elections}


@pytest.fixture(autouse=True)
def _listen_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elector_module, "NOTIFY_WAIT", LISTEN_WAIT)


@pytest.fixture
def url(redis_url: str) -> str:
    """The test server with a prefix of this test's own."""
    separator = "&" if "?" in redis_url else "?"
    return f"{redis_url}{separator}prefix=notices-{time.time_ns()}-{next(_prefixes)}"


@pytest.fixture
def nodes() -> Iterator[list[_Node]]:
    started: list[_Node] = []
    yield started
    for node in started:
        node.elector.stop()
        node.thread.join(WAIT)


def _start(nodes: list[_Node], backend: Any, names: Sequence[str] = NAMES) -> _Node:
    elector = Elector(backend)
    me = identity()

    def announce(_event: Announcement) -> None:
        return None

    for name in names:
        elector.join(Config(name=name, me=me, timing=TIMING), announce)
    thread = threading.Thread(target=elector.run, daemon=True)
    thread.start()
    node = _Node(elector, thread)
    nodes.append(node)
    return node


def _wait(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _proxied(hub: ProxyHub, url: str) -> tuple[FaultProxy, str]:
    """A proxy to ``url``'s server, and ``url`` through it."""
    where = urlsplit(url)
    proxy = hub.add(where.port or 6379, where.hostname or "127.0.0.1")
    return proxy, url.replace(where.netloc, f"127.0.0.1:{proxy.port}", 1)


def _sleeping_on_notices(looks: _Looks) -> None:
    """Assert that the follower of ``looks`` has looked at each name only near its expiry lately."""
    time.sleep(LISTEN_WAIT + 2 * TIMING.ttl + TIMING.retry)
    for name in NAMES:
        calm = looks.gaps(name, time.monotonic() - 2 * TIMING.ttl)
        assert calm and min(calm) >= 2 * TIMING.retry, f"{name}: not sleeping on live notices: {calm}"


def _leads(nodes: list[_Node], url: str) -> _Node:
    holder = _start(nodes, connect(url))
    _wait("the holder leads every name", lambda: holder.roles() == {"leader"})
    return holder


def test_a_follower_with_live_notices_looks_far_less_often_than_one_without(
    url: str, nodes: list[_Node]
) -> None:
    _leads(nodes, url)
    notified, polling = _Looks(connect(url)), _Looks(_Quiet(connect(url)))
    _start(nodes, notified)
    _start(nodes, polling)
    start = time.monotonic()
    time.sleep(LISTEN_WAIT + 3 * TIMING.ttl)
    watched = (start + LISTEN_WAIT + 2 * TIMING.retry, time.monotonic())
    for name in NAMES:
        sparse, dense = notified.gaps(name, *watched), polling.gaps(name, *watched)
        assert dense and max(dense) <= TIMING.retry + 0.1, f"{name}: polled at {dense} without notices"
        assert sparse and min(sparse) >= 2 * TIMING.retry, f"{name}: looked at {sparse} with notices"
        assert len(sparse) < len(dense) / 2, f"{name}: {len(sparse)} looks with notices, {len(dense)} without"


def test_a_listener_failure_puts_followers_back_to_polling_every_retry(url: str, nodes: list[_Node]) -> None:
    _leads(nodes, url)
    with ProxyHub() as hub:
        proxy, through = _proxied(hub, url)
        listener = connect(through)
        looks = _Looks(_ListensElsewhere(connect(url), listener))
        _start(nodes, looks)
        _sleeping_on_notices(looks)

        proxy.set(CUT)
        cut = time.monotonic()
        time.sleep(5 * TIMING.retry)
        down = looks.gaps(NAMES[0], cut + TIMING.retry / 2)
        first = min((t for t in looks.sent[NAMES[0]] if t >= cut), default=float("inf"))
        late = first - cut
        assert late <= TIMING.retry, f"the first look came {late:.3f} s after the listener broke"
        assert len(down) >= 3 and max(down) <= TIMING.retry + 0.1, f"looks {down} s apart without notices"

        proxy.set(PASS)
        healed = time.monotonic()
        time.sleep(LISTEN_WAIT + 3 * TIMING.ttl)
        again = looks.gaps(NAMES[0], healed + LISTEN_WAIT + 3 * TIMING.retry)
        assert again and min(again) >= 2 * TIMING.retry, f"polling on after the listener is back: {again}"
        listener.close()


def test_with_notices_a_holder_cut_off_is_taken_over_within_ttl_and_two_heartbeats(
    url: str, nodes: list[_Node]
) -> None:
    with ProxyHub() as hub:
        proxy, through = _proxied(hub, url)
        holder = _leads(nodes, through)
        looks = _Looks(connect(url))
        follower = _start(nodes, looks)
        _sleeping_on_notices(looks)

        proxy.set(CUT)  # the holder stops renewing, and cannot release: as if it crashed
        cut = time.monotonic()
        _wait("the follower takes over", lambda: follower.roles() == {"leader"}, TIMING.ttl + 1.0)
        taken = time.monotonic() - cut
        assert taken <= TIMING.ttl + 2 * TIMING.heartbeat, f"taken over {taken:.3f} s after the holder died"
        assert holder.roles() == {"follower"}, "the cut-off holder still calls itself leader"
