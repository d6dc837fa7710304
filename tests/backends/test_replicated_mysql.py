"""MariaDB behind a primary and a replica: a URL listing both hosts uses the one that accepts
writes, follows a promotion, and refuses to step when none or both do.

Each test starts its own primary and read-only replica (``tests.servers.mysql``). The failover
is what an operator or a tool does: the primary dies (SIGKILL), the replica is promoted
(``STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gomaster.backends import connect
from gomaster.backends.mysql import DEFAULT_TABLE
from gomaster.core.decide import Claim
from tests.backends.failover import TIMEOUT, TTL, acquire, error_of, renew_through, wait_for
from tests.helpers import identity
from tests.servers.mysql import REPLICATION, TEST_DATABASE, MariaDBReplica, MariaDBServer


@pytest.fixture
def pair() -> Iterator[tuple[MariaDBServer, MariaDBReplica]]:
    """A primary and its read-only replica, both holding the test database."""
    with (
        MariaDBServer(extra_args=(*REPLICATION, "--server-id=1")) as primary,
        MariaDBReplica(primary, server_id=2) as replica,
    ):
        primary.admin(f"CREATE DATABASE `{TEST_DATABASE}`")
        wait_for(lambda: bool(replica.admin(f"SHOW DATABASES LIKE '{TEST_DATABASE}'")), "the database")
        yield primary, replica


def _url(*servers: MariaDBServer) -> str:
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"mysql://root@{hosts}/{TEST_DATABASE}?connect_timeout=2"


def _holder_on(server: MariaDBServer, name: str) -> str | None:
    """Who holds ``name`` in ``server``'s lock table (None: no record, or no table yet)."""
    if not server.admin(f"SHOW TABLES IN `{TEST_DATABASE}` LIKE '{DEFAULT_TABLE}'"):
        return None
    rows = server.admin(f"SELECT holder FROM `{TEST_DATABASE}`.`{DEFAULT_TABLE}` WHERE name = '{name}'")
    holder = rows[0][0] if rows else None
    return holder.decode() if isinstance(holder, bytes) else None


def _failover(primary: MariaDBServer, replica: MariaDBReplica, name: str, holder: str) -> None:
    """Once the replica has ``name``'s record, kill the primary and promote the replica."""
    wait_for(lambda: _holder_on(replica, name) == holder, f"{name}'s record on the replica")
    primary.kill()
    replica.promote()


def test_a_host_list_settles_on_the_host_that_accepts_writes_wherever_it_is_listed(
    pair: tuple[MariaDBServer, MariaDBReplica],
) -> None:
    primary, replica = pair
    me = identity()
    backend = connect(_url(replica, primary))  # the read-only replica first
    try:
        acquire(backend, "where", me)
        assert _holder_on(primary, "where") == me.node_id
    finally:
        backend.close()


def test_the_lease_follows_the_primary_to_a_promoted_replica_with_its_holder_and_token(
    pair: tuple[MariaDBServer, MariaDBReplica],
) -> None:
    primary, replica = pair
    me = identity()
    backend = connect(_url(primary, replica))
    try:
        held = acquire(backend, "failover", me)
        _failover(primary, replica, "failover", me.node_id)
        renewed, _failed_tries = renew_through(backend, held)
        assert (renewed.holder, renewed.token) == (me.node_id, held.token)
    finally:
        backend.close()


def test_with_no_host_accepting_writes_every_step_fails_and_says_so(
    pair: tuple[MariaDBServer, MariaDBReplica],
) -> None:
    primary, replica = pair
    primary.kill()  # the replica, read-only, is all that is left
    backend = connect(_url(primary, replica))
    try:
        claim = Claim.first("nowhere", identity(), TTL)
        for step in (backend.observe("nowhere", TIMEOUT), backend.claim(claim, TIMEOUT)):
            text = error_of(step)
            assert "none of the listed hosts accepts writes" in text
            assert f"127.0.0.1:{replica.port} read-only" in text
        assert _holder_on(replica, "nowhere") is None
    finally:
        backend.close()


def test_an_old_primary_back_and_writable_beside_the_promoted_one_stops_every_claim_and_renewal(
    pair: tuple[MariaDBServer, MariaDBReplica],
) -> None:
    """A split brain of the database: two hosts accept writes, and a lease claimed on one is
    unknown to the other. The backend refuses to step on either rather than pick one."""
    primary, replica = pair
    me, rival = identity(), identity()
    holder = connect(_url(primary, replica))
    newcomer = connect(_url(primary, replica))
    try:
        held = acquire(holder, "split", me)
        _failover(primary, replica, "split", me.node_id)
        primary.start()  # comes back writable, with the record as it was when it died
        claim = Claim.first("other", rival, TTL)
        for step in (
            holder.renew(held, TTL, TIMEOUT),
            newcomer.observe("split", TIMEOUT),
            newcomer.claim(claim, TIMEOUT),
        ):
            text = error_of(step)
            assert "more than one listed host accepts writes" in text
            for server in (primary, replica):
                assert f"127.0.0.1:{server.port} writable" in text
        assert _holder_on(primary, "other") is None and _holder_on(replica, "other") is None
    finally:
        holder.close()
        newcomer.close()


def test_a_host_list_is_shown_whole_and_a_host_without_a_port_gets_the_default() -> None:
    backend = connect("mysql://root:secret@db1:3307,db2/app")
    assert backend.url == "mysql://root:***@db1:3307,db2:3306/app"
    with pytest.raises(ValueError, match="empty host"):
        connect("mysql://root@db1,,db2/app")


#: Semi-synchronous replication as docs/replicated.md advises, with a short fallback timeout.
SEMI_SYNC = (
    "--rpl-semi-sync-master-enabled=ON",
    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
    "--rpl-semi-sync-master-timeout=500",
)


def test_a_fallback_from_semi_synchronous_to_asynchronous_replication_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MariaDB stops waiting for replicas after ``rpl_semi_sync_master_timeout`` and tells no
    client: the backend watches ``Rpl_semi_sync_master_status`` and warns."""
    with (
        MariaDBServer(extra_args=(*REPLICATION, "--server-id=1", *SEMI_SYNC)) as primary,
        MariaDBReplica(primary, server_id=2, extra_args=("--rpl-semi-sync-slave-enabled=ON",)) as replica,
    ):
        primary.admin(f"CREATE DATABASE `{TEST_DATABASE}`")
        wait_for(lambda: _semi_sync_status(primary) == "ON", "semi-synchronous replication on")
        where = f"MySQL at 127.0.0.1:{primary.port}"
        backend = connect(_url(primary, replica))
        try:
            with caplog.at_level(logging.INFO, logger="gomaster"):
                held = acquire(backend, "semi", identity())
                assert [(r.levelno, r.getMessage()) for r in caplog.records if where in r.getMessage()] == [
                    (
                        logging.INFO,
                        f"{where}: semi-synchronous replication is on (AFTER_SYNC); it falls back to "
                        "asynchronous when no replica answers within rpl_semi_sync_master_timeout=500 ms, "
                        "which is reported; a failover to a replica that confirmed loses no lease write it "
                        "acknowledged",
                    )
                ]
                caplog.clear()
                replica.kill()

                def warned() -> bool:
                    backend.renew(held, TTL, TIMEOUT)  # the first waits out the 500 ms, then commits
                    return any(r.levelno == logging.WARNING for r in caplog.records)

                wait_for(warned, "the fallback reported")
        finally:
            backend.close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        f"{where}: semi-synchronous replication has fallen back to asynchronous "
        "(Rpl_semi_sync_master_status OFF: no replica acknowledged within rpl_semi_sync_master_timeout=500 "
        "ms); a failover can lose lease writes it acknowledged"
    ), warning


def _semi_sync_status(server: MariaDBServer) -> object:
    rows = server.admin("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
    return rows[0][1] if rows else None
