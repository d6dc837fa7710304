"""PostgreSQL behind a primary and a streaming standby: the backend follows a failover.

Each test starts its own primary and standby (``tests.servers.postgresql``); the URL names both
hosts with ``target_session_attrs=read-write``, so libpq connects to whichever accepts writes.
The failover is what an operator or a tool like Patroni does: the primary dies (SIGKILL), the
standby is promoted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from returns.result import Failure

from gomaster.backends import connect
from gomaster.backends._primary import RESURVEY
from gomaster.backends.postgresql import DEFAULT_TABLE
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.timing import Timing
from tests.backends.failover import TIMEOUT, TTL, acquire, error_of, renew_through, wait_for
from tests.helpers import identity, ok
from tests.servers.postgresql import TEST_DATABASE, PostgreSQLServer, PostgreSQLStandby, create_database

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
            error = error_of(step)
            assert "none of the listed hosts accepts writes" in error
            assert f"127.0.0.1:{standby.port} a standby (in recovery)" in error
    finally:
        backend.close()


def test_with_the_old_primary_back_writable_beside_the_promoted_standby_nothing_is_claimed_or_renewed(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    """libpq alone would take the first writable host it meets, here the old primary, whose
    lease table the promoted standby's holders never see: a split brain of the database."""
    primary, standby = pair
    me = identity()
    holder = connect(_url(primary, standby))
    try:
        held = acquire(holder, "brain", me)
        primary.kill()
        standby.promote()
        renewed, _ = renew_through(holder, held)
        primary.start()  # crash recovery, then a primary again: nothing tells it otherwise
        time.sleep(RESURVEY)  # the holder's connection to the new primary is due for a survey
        claim = Claim.first("other", identity(), TTL)
        for step in (holder.renew(renewed, TTL, TIMEOUT), holder.claim(claim, TIMEOUT)):
            error = error_of(step)
            assert "more than one listed host accepts writes" in error, error
            for server in (primary, standby):
                assert f"127.0.0.1:{server.port} writable" in error
    finally:
        holder.close()
    with primary.admin(TEST_DATABASE) as conn:
        rows = conn.execute(f'SELECT name FROM "{DEFAULT_TABLE}" WHERE name = %s', ("other",)).fetchall()
    assert rows == [], "a claim reached the old primary"


def test_a_commit_whose_wait_for_the_synchronous_standby_is_cancelled_counts_as_failed(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby],
) -> None:
    """With its standby gone, the primary waits for it before it acknowledges a commit (the
    statement timeout does not cover that wait). Once someone cancels the wait, the commit
    stands locally and only a WARNING says the standby may lack it, so the step must fail."""
    primary, standby = pair
    backend = connect(_url(primary, standby))
    try:
        acquire(backend, "warm", identity())  # table made while the standby still answers
        standby.stop()
        me = identity()
        with ThreadPoolExecutor(1) as pool:
            claimed = pool.submit(backend.claim, Claim.first("unconfirmed", me, TTL), 4 * TIMEOUT)
            wait_for(lambda: _cancel_wait_for_standby(primary), "the claim waiting for the standby")
            error = error_of(claimed.result())
        assert "claim counted as failed" in error and "synchronous replication" in error, error
    finally:
        backend.close()
    with primary.admin(TEST_DATABASE) as conn:
        found = conn.execute(f'SELECT holder FROM "{DEFAULT_TABLE}" WHERE name = %s', ("unconfirmed",))
        assert found.fetchall() == [(me.node_id,)], "the claim should be committed on the primary alone"


def _cancel_wait_for_standby(server: PostgreSQLServer) -> bool:
    """Cancel a session's wait for a synchronous standby, as an operator would; False if none waits."""
    with server.admin() as conn:
        found = conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
        ).fetchall()
    return found == [(True,)]


def test_the_backend_says_at_start_whether_a_failover_can_lose_acknowledged_lease_writes(
    pair: tuple[PostgreSQLServer, PostgreSQLStandby], caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    with caplog.at_level(logging.INFO, logger="gomaster"):
        backend = connect(_url(primary, standby))
        try:
            ok(backend.observe("any", TIMEOUT))
        finally:
            backend.close()
        # A session may turn the wait off for itself: it is the session's setting that counts.
        backend = connect(_url(primary, standby) + "&options=-c%20synchronous_commit%3Dlocal")
        try:
            ok(backend.observe("any", TIMEOUT))
        finally:
            backend.close()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if f":{primary.port}:" in r.getMessage()]
    assert said == [
        (
            logging.INFO,
            f"PostgreSQL at 127.0.0.1:{primary.port}: commits wait for synchronous_standby_names 's1' "
            "(synchronous_commit on); a failover to a replica that confirmed loses no lease write it "
            "acknowledged",
        ),
        (
            logging.WARNING,
            f"PostgreSQL at 127.0.0.1:{primary.port}: synchronous_commit local: commits do not wait for "
            "synchronous_standby_names 's1'; a failover can lose lease writes it acknowledged: two "
            "masters at once, or one fencing token handed out twice",
        ),
    ]
