"""Redis behind Sentinel: a ``redis+sentinel://`` URL asks the sentinels for the primary and
follows it when they fail it over.

Each test starts its own primary, replica and three sentinels (``tests.servers.redis``), quick to
act: a primary silent for 0.5 s is down, and they promote the replica about 2 s after a kill.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError, Lost
from gomaster.core.record import LockRecord, NodeIdentity
from gomaster.core.timing import Timing
from tests.helpers import identity, ok, result
from tests.servers.redis import RedisSentinel, RedisServer

SERVICE = "m"
#: Long enough that the lease outlives the failover: these tests are about where steps go.
TTL = 30.0
TIMEOUT = 2.0
#: Sentinel takes about 2 s to promote (SERVERS.md); the holder retries its renewal meanwhile.
FOLLOW_WITHIN = 15.0
REPLICATED_WITHIN = 10.0


class Replicated:
    """A primary, its replica and three sentinels watching the primary."""

    def __init__(self, primary: RedisServer, replica: RedisServer, sentinels: list[RedisSentinel]) -> None:
        self.primary, self.replica, self.sentinels = primary, replica, sentinels

    def url(self, service: str = SERVICE) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{service}/0"


@pytest.fixture
def replicated() -> Iterator[Replicated]:
    with (
        RedisServer() as primary,
        RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port))) as replica,
    ):
        sentinels = [RedisSentinel(primary, service=SERVICE) for _ in range(3)]
        try:
            for sentinel in sentinels:
                sentinel.start()
            _wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", "the link")
            yield Replicated(primary, replica, sentinels)
        finally:
            for sentinel in sentinels:
                sentinel.cleanup()


def _wait_for(condition: Callable[[], bool], what: str, within: float = REPLICATED_WITHIN) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what} within {within} s"
        time.sleep(0.05)


def _acquire(backend: LockBackend, name: str, me: NodeIdentity) -> LockRecord:
    planned = plan_acquire(ok(backend.observe(name, TIMEOUT)), name, me, Timing.from_ttl(TTL))
    assert isinstance(planned, Success), f"{name} is held already: {planned}"
    plan = planned.unwrap()
    claim = Claim(name=name, node=me, token=plan.token, expected=plan.expected, ttl=TTL)
    return ok(backend.claim(claim, TIMEOUT))


def test_a_sentinel_url_claims_on_the_primary_the_sentinels_name(replicated: Replicated) -> None:
    me = identity()
    backend = connect(replicated.url())
    try:
        _acquire(backend, "where", me)
        leases = [key for key in replicated.primary.client().keys("gomaster:lease:*")]
        assert len(leases) == 1, "the lease is not on the primary"
    finally:
        backend.close()


def test_the_lease_follows_the_primary_sentinel_promotes_with_its_holder_and_token(
    replicated: Replicated,
) -> None:
    me = identity()
    backend = connect(replicated.url())
    try:
        held = _acquire(backend, "failover", me)
        _wait_for(
            lambda: bool(replicated.replica.client().keys("gomaster:lease:*")), "the lease on the replica"
        )
        replicated.primary.kill()
        errors: list[str] = []
        deadline = time.monotonic() + FOLLOW_WITHIN
        while True:
            match result(backend.renew(held, TTL, TIMEOUT)):
                case Success(renewed):
                    break
                case Failure(Lost() as lost):
                    raise AssertionError(f"the holder lost its lease in the failover: {lost}")
                case Failure(error):
                    errors.append(str(error))
            assert time.monotonic() < deadline, f"no renewal on the promoted replica: {errors[-3:]}"
            time.sleep(0.2)
        assert (renewed.holder, renewed.token) == (me.node_id, held.token)
        promoted = ("127.0.0.1", replicated.replica.port)
        assert all(sentinel.primary_address() == promoted for sentinel in replicated.sentinels)
        assert errors, "the renewal never failed: the primary was not failed over under it"
    finally:
        backend.close()


def test_sentinels_that_name_no_primary_for_the_service_say_so(replicated: Replicated) -> None:
    backend = connect(replicated.url(service="nosuch"))
    try:
        failed = result(backend.observe("any", TIMEOUT))
        assert isinstance(failed, Failure) and isinstance(failed.failure(), BackendError)
        text = str(failed.failure())
        assert "no sentinel names a primary for service 'nosuch'" in text
        assert text.count("names none") == len(replicated.sentinels)
    finally:
        backend.close()


def test_a_sentinel_url_lists_its_sentinels_service_and_database() -> None:
    backend = connect("redis+sentinel://:secret@s1:26380,s2/mymaster/2?prefix=app")
    assert backend.url == "redis+sentinel://:***@s1:26380,s2:26379/mymaster/2?prefix=app"
    with pytest.raises(ValueError, match="names the service"):
        connect("redis+sentinel://s1:26379,s2:26379")
    with pytest.raises(ValueError, match="redis\\+sentinel://h1:26379"):
        connect("redis://s1:6379,s2:6379/0")
