"""PostgreSQL behind a primary and a streaming standby: the backend follows a failover.

Each test starts its own primary and standby (``tests.servers.postgresql``); the URL names both
hosts with ``target_session_attrs=read-write``, so libpq connects to whichever accepts writes.
The failover is what an operator or a tool like Patroni does: the primary dies (SIGKILL), the
standby is promoted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from returns.result import Failure

from gomaster.backends import connect
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.timing import Timing
from tests.backends.failover import TIMEOUT, TTL, acquire, error_of, renew_through, wait_for
from tests.helpers import identity, ok
from tests.servers.postgresql import PostgreSQLServer, PostgreSQLStandby, create_database

#: The primary waits for the standby named here before it acknowledges a commit.
SYNCHRONOUS = ("synchronous_standby_names=s1", "synchronous_commit=on")


@pytest.fixture
def pair() -> Iterator[tuple[PostgreSQLServer, PostgreSQLStandby]]:
    """A primary whose commits wait for its one synchronous standby, and that standby."""
    with PostgreSQLServer(settings=SYNCHRONOUS) as primary, PostgreSQLStandby(primary, name="s1") as standby:
        wait_for(standby.streaming, "the standby streaming")
        create_database(primary)  # a commit: it waits for the standby, so only once it streams
        wait_for(standby.has_database, "the database replayed on the standby")
        yield primary, standby


def _url(*servers: PostgreSQLServer) -> str:
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/gomaster_test?target_session_attrs=read-write&connect_timeout=2"


def test_a_lease_claimed_on_the_primary_is_renewed_on_the_promoted_standby_with_its_token(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    primary, standby = pair
    me, other = identity(), identity()
    holder, rival = connect(_url(primary, standby)), connect(_url(primary, standby))
    try:
        held = acquire(holder, "failover", me)
        assert held.token == 1
        primary.kill()
        standby.promote()
        renewed, _failed_tries = renew_through(holder, held)
        assert (renewed.holder, renewed.token) == (me.node_id, 1), "the lease lost its holder or token"
        seen = ok(rival.observe("failover", TIMEOUT))
        assert seen.record is not None and seen.record.holder == me.node_id
        assert isinstance(plan_acquire(seen, "failover", other, Timing.from_ttl(TTL)), Failure), (
            "another node may claim a lease that is still held on the new primary"
        )
    finally:
        holder.close()
        rival.close()


def test_a_claim_after_the_failover_continues_the_token_sequence(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    """Fencing tokens never repeat across a failover with a synchronous standby: the record's
    token came over with every acknowledged commit."""
    primary, standby = pair
    before = connect(_url(primary, standby))
    try:
        first = acquire(before, "tokens", identity())
        assert ok(before.release(first, TIMEOUT))
    finally:
        before.close()
    primary.kill()
    standby.promote()
    after = connect(_url(primary, standby))
    try:
        assert acquire(after, "tokens", identity()).token == first.token + 1
    finally:
        after.close()


def test_with_no_writable_host_listed_every_step_fails_and_says_the_standby_is_read_only(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    """Between the primary's death and the promotion, only a read-only standby is left: the
    backend must say so rather than claim on it."""
    primary, standby = pair
    primary.kill()
    backend = connect(_url(primary, standby))
    try:
        claim = Claim.first("any", identity(), TTL)
        for step in (backend.observe("any", TIMEOUT), backend.claim(claim, TIMEOUT)):
            # libpq's word for a host that answered but is a standby (the URL says read-write too).
            assert f"port {standby.port} failed: session is read-only" in error_of(step)
    finally:
        backend.close()
