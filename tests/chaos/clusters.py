"""Replicated stores for the failover harness: a primary and a replica (and, for Redis, three
sentinels) on throwaway servers, failed over and rebuilt round after round.

Each cluster keeps two ports for the life of the run, so the nodes' URL never changes: a round
kills the primary with SIGKILL, promotes the replica (the harness, as an operator or a tool like
Patroni would, for PostgreSQL and MariaDB; Sentinel for Redis), then builds a fresh replica of
the new primary on the dead one's port. In ``sync`` mode the primary waits for its replica
before it acknowledges a write (PostgreSQL ``synchronous_standby_names``, MariaDB semi-sync
``AFTER_SYNC``, Redis ``min-replicas-to-write`` with the backend's ``wait_replicas``); a newly
promoted primary has no replica until the rebuild, so the harness turns the wait off at the
promotion and on again once the new replica streams, as Patroni's non-strict synchronous mode
does (Redis keeps refusing writes until then). In ``async`` mode nothing waits.

The replica reaches its primary through a fault proxy that delays every chunk by ``lag`` each
way, as a replica in another zone would, and the kill cuts that link first, dropping what it
still carries: the replica has lost whatever it had not received by then, as when a primary dies
with its replica behind. On loopback alone, replication would be so quick that asynchronous
settings could hardly lose a write. What a synchronous setting acknowledged had reached the
replica (the acknowledgement itself came back through the proxy), so it loses nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from tests.chaos.proxy import FaultProxy, ProxyHub, delayed
from tests.servers.mysql import REPLICATION, TEST_DATABASE, MariaDBReplica, MariaDBServer
from tests.servers.postgresql import PostgreSQLServer, PostgreSQLStandby, create_database
from tests.servers.redis import RedisSentinel, RedisServer

MODES = ("sync", "async")
#: How long a promotion or a rebuilt replica may take before the round fails.
SETTLE_WITHIN = 60.0
_POLL = 0.02
#: The service name the sentinels watch.
SERVICE = "m"
#: Seconds each way on the replication link by default.
LAG = 0.05


class _Link:
    """The replication link: a delaying proxy to the current primary, replaced with it."""

    def __init__(self, hub: ProxyHub, lag: float) -> None:
        self.hub, self.lag = hub, lag
        self.proxy: FaultProxy | None = None

    def to(self, port: int) -> int:
        """A fresh proxy to ``port`` (the old one closed); its own port, to replicate from."""
        self.close()
        self.proxy = self.hub.add(port)
        self.proxy.set(delayed(self.lag))
        return self.proxy.port

    def close(self) -> None:
        """Close the proxy, and with it the replica's connection."""
        if self.proxy is not None:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.proxy.close()
            self.proxy = None


class Cluster(Protocol):
    """A primary and a replica that the harness fails over."""

    #: The URL every node uses: both hosts (or the sentinels).
    url: str
    #: Whether lease writes are accepted once the replica is promoted, before the rebuild.
    writable_before_rebuild: bool

    def kill_primary(self) -> None:
        """Cut the replication link, dropping what it still carries, and SIGKILL the primary:
        the replica has lost what it had not received ``lag`` before."""
        ...

    def promote(self) -> None:
        """Return once the replica is the primary and takes writes (for Redis, once Sentinel
        promoted it)."""
        ...

    def rebuild(self) -> None:
        """A fresh replica of the new primary on the dead one's port, replicating (and, in sync
        mode, confirming) before this returns."""
        ...

    def close(self) -> None:
        """Stop and delete every server."""
        ...


def _until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` (a server that does not answer yet counts as False) until it holds."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {SETTLE_WITHIN} s")
        time.sleep(_POLL)


#: The test servers' default is ``synchronous_commit=off`` (speed); here commits wait for their
#: own flush, and in sync mode for the standby's (a session's setting is what counts).
COMMIT = ("synchronous_commit=on",)


class PostgreSQLCluster:
    """A primary and a streaming standby from ``pg_basebackup``; promoted by ``pg_promote``."""

    writable_before_rebuild = True

    def __init__(self, sync: bool, link: _Link) -> None:
        self.sync, self.link = sync, link
        self.primary = PostgreSQLServer(settings=COMMIT).start()
        try:
            create_database(self.primary)
            self.standby: PostgreSQLStandby | None = self._standby(None)
            self._settle()
        except BaseException:
            self.close()
            raise
        assert self.standby is not None
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        self.url = f"postgresql://postgres@{hosts}/gomaster_test?connect_timeout=2"

    def _standby(self, port: int | None) -> PostgreSQLStandby:
        through = self.link.to(self.primary.port)
        return PostgreSQLStandby(self.primary, name="s1", port=port, through=through, settings=COMMIT).start()

    def _set_standby_names(self, server: PostgreSQLServer, names: str) -> None:
        with server.admin() as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            conn.execute("SELECT pg_reload_conf()")

    def _settle(self) -> None:
        standby = self.standby
        assert standby is not None
        _until(standby.streaming, "the standby streaming")
        if self.sync:
            self._set_standby_names(self.primary, "s1")
            _until(lambda: self._sync_state() == "sync", "the standby confirming commits")

    def _sync_state(self) -> object:
        with self.primary.admin() as conn:
            row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
        return None if row is None else row[0]

    def kill_primary(self) -> None:
        self.link.close()
        self.primary.kill()

    def promote(self) -> None:
        standby, self.standby = self.standby, None
        assert standby is not None
        standby.promote()
        # Its configuration came from the old primary: it would wait for a standby it lacks.
        self._set_standby_names(standby, "")
        self.primary, self.dead = standby, self.primary

    def rebuild(self) -> None:
        dead = self.dead
        dead.cleanup()
        self.standby = self._standby(dead.port)
        self._settle()

    def close(self) -> None:
        self.link.close()
        for server in (self.primary, self.standby, getattr(self, "dead", None)):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.cleanup()


class MariaDBCluster:
    """A primary and a GTID replica; promoted by the harness once the relay log is applied."""

    writable_before_rebuild = True

    def __init__(self, sync: bool, link: _Link) -> None:
        self.sync, self.link = sync, link
        # Both roles can wait and be waited for; the harness turns the primary's wait on.
        self.common = (
            ("--rpl-semi-sync-slave-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC")
            if sync
            else ()
        )
        self.server_ids = iter(range(1, 1_000_000))
        self.primary = MariaDBServer(
            extra_args=(*REPLICATION, f"--server-id={next(self.server_ids)}", *self.common)
        )
        self.replica: MariaDBReplica | None = None
        try:
            self.primary.start()
            self.primary.admin(f"CREATE DATABASE `{TEST_DATABASE}`")
            self.replica = self._replica_of(self.primary, None).start()
            self._settle()
        except BaseException:
            self.close()
            raise
        assert self.replica is not None
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}"
        self.url = f"mysql://root@{hosts}/{TEST_DATABASE}?connect_timeout=2"

    def _replica_of(self, primary: MariaDBServer, port: int | None) -> MariaDBReplica:
        through = self.link.to(primary.port)
        return MariaDBReplica(
            primary, server_id=next(self.server_ids), extra_args=self.common, port=port, through=through
        )

    def _settle(self) -> None:
        replica = self.replica
        assert replica is not None
        _until(lambda: bool(replica.admin(f"SHOW DATABASES LIKE '{TEST_DATABASE}'")), "the replica")
        _until(replica.caught_up, "the replica catching up")
        if self.sync:
            self.primary.admin("SET GLOBAL rpl_semi_sync_master_enabled = ON")
            _until(
                lambda: (
                    self.primary.admin("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")[0][1] == "ON"
                ),
                "semi-synchronous replication",
            )

    def kill_primary(self) -> None:
        self.link.close()
        self.primary.kill()

    def promote(self) -> None:
        replica, self.replica = self.replica, None
        assert replica is not None
        replica.promote()
        self.primary, self.dead = replica, self.primary

    def rebuild(self) -> None:
        dead = self.dead
        dead.cleanup()
        self.replica = self._replica_of(self.primary, dead.port).start()
        self._settle()

    def close(self) -> None:
        self.link.close()
        for server in (self.primary, self.replica, getattr(self, "dead", None)):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.cleanup()


class RedisCluster:
    """A primary, a replica and three sentinels, which promote the replica."""

    def __init__(self, sync: bool, link: _Link) -> None:
        self.sync, self.link = sync, link
        # Sync: a primary without a replica refuses writes, and each step WAITs for one.
        sync_args = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10") if sync else ()
        # A new replica's full copy starts at once, not after the default 5 s wait for others.
        self.common = ("--repl-diskless-sync-delay", "0", *sync_args)
        self.writable_before_rebuild = not sync
        self.primary = RedisServer(args=self.common).start()
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisSentinel] = []
        try:
            self.replica = self._replica_of(self.primary, None).start()
            self._settle()
            self.sentinels = [RedisSentinel(self.primary, service=SERVICE) for _ in range(3)]
            for sentinel in self.sentinels:
                sentinel.start()
        except BaseException:
            self.close()
            raise
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0" + ("?wait_replicas=1" if sync else "")

    def _replica_of(self, primary: RedisServer, port: int | None) -> RedisServer:
        through = self.link.to(primary.port)
        return RedisServer(port=port, args=(*self.common, "--replicaof", "127.0.0.1", str(through)))

    def _settle(self) -> None:
        replica = self.replica
        assert replica is not None
        _until(lambda: replica.client().info("replication")["master_link_status"] == "up", "the link")

    def kill_primary(self) -> None:
        self.link.close()
        self.primary.kill()

    def promote(self) -> None:
        replica, self.replica = self.replica, None
        assert replica is not None
        wanted = ("127.0.0.1", replica.port)
        _until(
            lambda: (
                sum(s.primary_address() == wanted for s in self.sentinels) >= 2
                and replica.client().info("replication")["role"] == "master"
            ),
            "Sentinel promoting the replica",
        )
        self.primary, self.dead = replica, self.primary

    def rebuild(self) -> None:
        dead = self.dead
        dead.cleanup()
        self.replica = self._replica_of(self.primary, dead.port).start()
        self._settle()

    def close(self) -> None:
        self.link.close()
        for server in (*self.sentinels, self.primary, self.replica, getattr(self, "dead", None)):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.cleanup()


def start_cluster(backend: str, mode: str, hub: ProxyHub, lag: float = LAG) -> Cluster:
    """A replicated ``backend`` in ``mode`` (``sync`` or ``async``), ready for nodes, its
    replication link through ``hub`` with ``lag`` seconds each way."""
    sync, link = mode == "sync", _Link(hub, lag)
    if backend == "postgresql":
        return PostgreSQLCluster(sync, link)
    if backend == "mysql":
        return MariaDBCluster(sync, link)
    if backend == "redis":
        return RedisCluster(sync, link)
    raise ValueError(f"no replicated {backend!r} here: use postgresql, mysql or redis")
