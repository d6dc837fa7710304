"""PostgreSQL behind a primary and a streaming standby: the backend follows a failover.

Each test starts its own primary and standby (``tests.servers.postgresql``); the URL names both
hosts with ``target_session_attrs=read-write``, so libpq connects to whichever accepts writes.
The failover is what an operator or a tool like Patroni does: the primary dies (SIGKILL), the
standby is promoted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.errors import BackendError, Lost
from gomaster.core.record import LockRecord, NodeIdentity
from gomaster.core.timing import Timing
from tests.helpers import identity, ok, result
from tests.servers.postgresql import PostgreSQLServer, PostgreSQLStandby, create_database

#: Long enough that the lease outlives the failover: the test shows it survives, not that it
#: is claimed again.
TTL = 30.0
TIMEOUT = 2.0
#: How long the holder keeps retrying its renewal after the promotion (a node retries each
#: heartbeat for as long as its lease lasts).
FOLLOW_WITHIN = 10.0
#: The primary waits for the standby named here before it acknowledges a commit.
SYNCHRONOUS = ("synchronous_standby_names=s1", "synchronous_commit=on")


@pytest.fixture
def pair() -> Iterator[tuple[PostgreSQLServer, PostgreSQLStandby]]:
    """A primary whose commits wait for its one synchronous standby, and that standby."""
    with PostgreSQLServer(settings=SYNCHRONOUS) as primary, PostgreSQLStandby(primary, name="s1") as standby:
        deadline = time.monotonic() + 10.0
        while not standby.streaming():
            assert time.monotonic() < deadline, "the standby never streamed from the primary"
            time.sleep(0.05)
        create_database(primary)  # a commit: it waits for the standby, so only once it streams
        while not standby.has_database():  # flushed there, and now replayed
            assert time.monotonic() < deadline, "the standby never replayed CREATE DATABASE"
            time.sleep(0.05)
        yield primary, standby


def _url(*servers: PostgreSQLServer) -> str:
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"postgresql://postgres@{hosts}/gomaster_test?target_session_attrs=read-write&connect_timeout=2"


def _acquire(backend: LockBackend, name: str, me: NodeIdentity) -> LockRecord:
    planned = plan_acquire(ok(backend.observe(name, TIMEOUT)), name, me, Timing.from_ttl(TTL))
    assert isinstance(planned, Success), f"{name} is held already: {planned}"
    claim = planned.unwrap()
    return ok(
        backend.claim(Claim(name=name, node=me, token=claim.token, expected=claim.expected, ttl=TTL), TIMEOUT)
    )


def _renew_until_it_works(backend: LockBackend, record: LockRecord) -> tuple[LockRecord, list[str]]:
    """Renew as a holder does, once per try until one succeeds; the renewed record and the
    errors of the tries that failed."""
    errors: list[str] = []
    deadline = time.monotonic() + FOLLOW_WITHIN
    while time.monotonic() < deadline:
        match result(backend.renew(record, TTL, TIMEOUT)):
            case Success(renewed):
                return renewed, errors
            case Failure(Lost() as lost):
                raise AssertionError(f"the holder lost its lease in the failover: {lost}")
            case Failure(error):
                errors.append(str(error))
                time.sleep(0.2)
    raise AssertionError(f"no renewal succeeded within {FOLLOW_WITHIN} s of the promotion: {errors[-3:]}")


def test_a_lease_claimed_on_the_primary_is_renewed_on_the_promoted_standby_with_its_token(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    primary, standby = pair
    me, other = identity(), identity()
    holder, rival = connect(_url(primary, standby)), connect(_url(primary, standby))
    try:
        held = _acquire(holder, "failover", me)
        assert held.token == 1
        primary.kill()
        standby.promote()
        renewed, _failed_tries = _renew_until_it_works(holder, held)
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
    me, successor = identity(), identity()
    before = connect(_url(primary, standby))
    try:
        first = _acquire(before, "tokens", me)
        assert ok(before.release(first, TIMEOUT))
    finally:
        before.close()
    primary.kill()
    standby.promote()
    after = connect(_url(primary, standby))
    try:
        second = _acquire(after, "tokens", successor)
        assert second.token == first.token + 1
    finally:
        after.close()


def test_with_no_writable_host_listed_the_error_says_none_accepts_writes(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    """Between the primary's death and the promotion, only a read-only standby is left: the
    backend must say so rather than claim on it."""
    primary, standby = pair
    primary.kill()
    backend = connect(_url(primary, standby))
    try:
        me = identity()
        claim = Claim(name="any", node=me, token=1, expected=None, ttl=TTL)
        for step in (backend.observe("any", TIMEOUT), backend.claim(claim, TIMEOUT)):
            failed = result(step)
            assert isinstance(failed, Failure) and isinstance(failed.failure(), BackendError)
            # libpq's word for a host that answered but is a standby (the URL says read-write too).
            assert f"port {standby.port} failed: session is read-only" in str(failed.failure())
    finally:
        backend.close()
