"""Redis behind Sentinel: a ``redis+sentinel://`` URL asks the sentinels for the primary and
follows it when they fail it over.

Each test starts its own primary, replica and three sentinels (``tests.servers.redis``), quick to
act: a primary silent for 0.5 s is down, and they promote the replica about 2 s after a kill.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gomaster.backends import connect
from tests.backends.failover import TIMEOUT, TTL, acquire, error_of, renew_through, wait_for
from tests.helpers import identity, ok
from tests.servers.redis import RedisSentinel, RedisServer

SERVICE = "m"


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
            wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", "the link")
            yield Replicated(primary, replica, sentinels)
        finally:
            for sentinel in sentinels:
                sentinel.cleanup()


def test_a_sentinel_url_claims_on_the_primary_the_sentinels_name(replicated: Replicated) -> None:
    me = identity()
    backend = connect(replicated.url())
    try:
        acquire(backend, "where", me)
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
        held = acquire(backend, "failover", me)
        wait_for(
            lambda: bool(replicated.replica.client().keys("gomaster:lease:*")), "the lease on the replica"
        )
        replicated.primary.kill()
        renewed, errors = renew_through(backend, held)
        assert (renewed.holder, renewed.token) == (me.node_id, held.token)
        promoted = ("127.0.0.1", replicated.replica.port)
        # The renewal went to the first sentinel that named it; the others may learn a moment later.
        wait_for(
            lambda: all(sentinel.primary_address() == promoted for sentinel in replicated.sentinels),
            "every sentinel naming the promoted replica",
        )
        assert errors, "the renewal never failed: the primary was not failed over under it"
    finally:
        backend.close()


def test_sentinels_that_name_no_primary_for_the_service_say_so(replicated: Replicated) -> None:
    backend = connect(replicated.url(service="nosuch"))
    try:
        text = error_of(backend.observe("any", TIMEOUT))
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
    # One IPv6 sentinel, with and without its port (the default port once read as a host part).
    assert connect("redis+sentinel://[::1]/m").url == "redis+sentinel://[::1]:26379/m/0"
    assert connect("redis+sentinel://[::1]:26380/m").url == "redis+sentinel://[::1]:26380/m/0"


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica, linked."""
    with (
        RedisServer() as primary,
        RedisServer(args=("--replicaof", "127.0.0.1", str(primary.port))) as replica,
    ):
        wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", "the link")
        yield primary, replica


def test_with_wait_replicas_a_write_no_replica_confirms_counts_as_failed(
    pair: tuple[RedisServer, RedisServer],
) -> None:
    """``WAIT`` goes in the same round trip as the step's script; a renewal the replica did not
    confirm is written on the primary but must not count as renewed."""
    primary, replica = pair
    backend = connect(primary.url(wait_replicas="1"))
    try:
        held = acquire(backend, "waited", identity())
        replica.kill()
        error = error_of(backend.renew(held, TTL, TIMEOUT))
        assert "renew counted as failed" in error and "WAIT 1: 0 replica(s) confirmed" in error, error
        assert ok(backend.observe("waited", TIMEOUT)).record is not None, "a read needs no replica"
    finally:
        backend.close()


def test_the_backend_says_at_start_what_a_failover_can_lose_and_when_wait_asks_for_too_many(
    pair: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    primary, _replica = pair
    where = f"Redis at 127.0.0.1:{primary.port}"
    said: list[tuple[int, str]] = []
    for wait in ("0", "1", "2"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gomaster"):
            backend = connect(primary.url(wait_replicas=wait))
            try:
                ok(backend.observe("any", TIMEOUT))
            finally:
                backend.close()
        said += [(r.levelno, r.getMessage()) for r in caplog.records if f"{where}:" in r.getMessage()]
    assert said == [
        (
            logging.WARNING,
            f"{where}: 1 replica(s) copy it asynchronously and lease writes do not wait for them; a "
            "failover can lose lease writes it acknowledged: two masters at once, or one fencing token "
            "handed out twice (set wait_replicas=1 and min-replicas-to-write 1)",
        ),
        (
            logging.INFO,
            f"{where}: each lease write waits for 1 of 1 connected replica(s) (WAIT; min-replicas-to-write "
            "0); a failover to a replica that confirmed loses no lease write it acknowledged, if it kept "
            "the write (WAIT confirms receipt, not a write to disk)",
        ),
        (
            logging.WARNING,
            f"{where}: each lease write waits for 2 of 1 connected replica(s) (WAIT; min-replicas-to-write "
            "0); every write step fails until 2 replica(s) are connected",
        ),
    ]


@pytest.mark.parametrize("wait", ["-1", "two", "101"])
def test_a_wait_replicas_that_is_not_a_small_whole_number_is_refused_at_start(wait: str) -> None:
    with pytest.raises(ValueError, match=f"wait_replicas '{wait}' must be a whole number from 0 to 100"):
        connect(f"redis://127.0.0.1:6379/0?wait_replicas={wait}")
