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
from typing import Generic, Protocol, TypeVar

from tests.chaos.proxy import FaultProxy, ProxyHub, delayed
from tests.servers.base import ThrowawayServer
from tests.servers.mysql import REPLICATION, TEST_DATABASE, MariaDBReplica, MariaDBServer
from tests.servers.postgresql import PostgreSQLServer, PostgreSQLStandby, create_database
from tests.servers.redis import RedisSentinel, RedisServer

MODES = ("sync", "async")
#: How long a promotion or a rebuilt replica may take before the round fails.
SETTLE_WITHIN = 60.0
_POLL = 0.02
_S = TypeVar("_S", bound=ThrowawayServer)

#: The service name the sentinels watch.
SERVICE = "m"
#: The sentinels' down-after-milliseconds. Sentinel pings each instance once a second, so with
#: 500 ms (the tests' quick setting) a primary it has just switched to can look down before its
#: first reply, and it fails over a second time, to the replica the harness has just rebuilt.
DOWN_AFTER = 2000
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


class _Pair(Generic[_S]):
    """What every cluster does alike: the round's kill, swap, rebuild and tear-down. A subclass
    starts its servers, says how a replica is made (``_replica_of``, started), how to wait for it
    (``_settle``) and how it is promoted (``_promote``)."""

    writable_before_rebuild = True

    def __init__(self, sync: bool, link: _Link, primary: _S) -> None:
        self.sync, self.link, self.primary = sync, link, primary
        self.replica: _S | None = None
        self.dead: _S | None = None
        #: Servers beside the pair (sentinels), stopped with it.
        self.others: list[ThrowawayServer] = []
        self.url = ""

    def _begin(self, url: Callable[[], str]) -> None:
        """The first replica, settled, then the nodes' URL; everything stopped on failure."""
        try:
            self.replica = self._replica_of(self.primary, None)
            self._settle()
            self.url = url()
        except BaseException:
            self.close()
            raise

    def _replica_of(self, primary: _S, port: int | None) -> _S:
        raise NotImplementedError

    def _settle(self) -> None:
        raise NotImplementedError

    def _promote(self, replica: _S) -> None:
        raise NotImplementedError

    def _hosts(self, scheme_user: str, tail: str) -> str:
        replica = self.replica
        assert replica is not None
        return f"{scheme_user}@127.0.0.1:{self.primary.port},127.0.0.1:{replica.port}{tail}"

    def kill_primary(self) -> None:
        self.link.close()
        self.primary.kill()

    def promote(self) -> None:
        replica, self.replica = self.replica, None
        assert replica is not None
        self._promote(replica)
        self.primary, self.dead = replica, self.primary

    def rebuild(self) -> None:
        dead = self.dead
        assert dead is not None
        dead.cleanup()
        self.replica = self._replica_of(self.primary, dead.port)
        self._settle()

    def close(self) -> None:
        self.link.close()
        for server in (*self.others, self.primary, self.replica, self.dead):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.cleanup()


#: The test servers' default is ``synchronous_commit=off`` (speed); here commits wait for their
#: own flush, and in sync mode for the standby's (a session's setting is what counts).
COMMIT = ("synchronous_commit=on",)


class PostgreSQLCluster(_Pair[PostgreSQLServer]):
    """A primary and a streaming standby from ``pg_basebackup``; promoted by ``pg_promote``."""

    def __init__(self, sync: bool, link: _Link) -> None:
        super().__init__(sync, link, PostgreSQLServer(settings=COMMIT).start())
        try:
            create_database(self.primary)
        except BaseException:
            self.close()
            raise
        self._begin(lambda: self._hosts("postgresql://postgres", "/gomaster_test?connect_timeout=2"))

    def _replica_of(self, primary: PostgreSQLServer, port: int | None) -> PostgreSQLServer:
        through = self.link.to(primary.port)
        return PostgreSQLStandby(primary, name="s1", port=port, through=through, settings=COMMIT).start()

    def _set_standby_names(self, server: PostgreSQLServer, names: str) -> None:
        with server.admin() as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            conn.execute("SELECT pg_reload_conf()")

    def _settle(self) -> None:
        standby = self.replica
        assert isinstance(standby, PostgreSQLStandby)
        _until(standby.streaming, "the standby streaming")
        if self.sync:
            self._set_standby_names(self.primary, "s1")
            _until(lambda: self._sync_state() == "sync", "the standby confirming commits")

    def _sync_state(self) -> object:
        with self.primary.admin() as conn:
            row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
        return None if row is None else row[0]

    def _promote(self, replica: PostgreSQLServer) -> None:
        assert isinstance(replica, PostgreSQLStandby)
        replica.promote()
        # Its configuration came from the old primary: it would wait for a standby it lacks.
        self._set_standby_names(replica, "")


class MariaDBCluster(_Pair[MariaDBServer]):
    """A primary and a GTID replica; promoted by the harness once the relay log is applied."""

    def __init__(self, sync: bool, link: _Link) -> None:
        # Both roles can wait and be waited for; the harness turns the primary's wait on.
        semi_sync = ("--rpl-semi-sync-slave-enabled=ON", "--rpl-semi-sync-master-wait-point=AFTER_SYNC")
        self.common = semi_sync if sync else ()
        self.server_ids = iter(range(1, 1_000_000))
        first = MariaDBServer(extra_args=(*REPLICATION, f"--server-id={next(self.server_ids)}", *self.common))
        super().__init__(sync, link, first.start())
        try:
            self.primary.admin(f"CREATE DATABASE `{TEST_DATABASE}`")
        except BaseException:
            self.close()
            raise
        self._begin(lambda: self._hosts("mysql://root", f"/{TEST_DATABASE}?connect_timeout=2"))

    def _replica_of(self, primary: MariaDBServer, port: int | None) -> MariaDBServer:
        through = self.link.to(primary.port)
        server_id = next(self.server_ids)
        return MariaDBReplica(
            primary, server_id=server_id, extra_args=self.common, port=port, through=through
        ).start()

    def _settle(self) -> None:
        replica = self.replica
        assert isinstance(replica, MariaDBReplica)
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

    def _promote(self, replica: MariaDBServer) -> None:
        assert isinstance(replica, MariaDBReplica)
        replica.promote()


class RedisCluster(_Pair[RedisServer]):
    """A primary, a replica and three sentinels, which promote the replica."""

    def __init__(self, sync: bool, link: _Link) -> None:
        # Sync: a primary without a replica refuses writes, and each step WAITs for one.
        sync_args = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10") if sync else ()
        # A new replica's full copy starts at once, not after the default 5 s wait for others.
        self.common = ("--repl-diskless-sync-delay", "0", *sync_args)
        super().__init__(sync, link, RedisServer(args=self.common).start())
        self.writable_before_rebuild = not sync
        self._begin(self._sentinels)

    def _sentinels(self) -> str:
        """Start three sentinels watching the primary; the nodes' URL names them."""
        self.others = [RedisSentinel(self.primary, service=SERVICE, down_after=DOWN_AFTER) for _ in range(3)]
        for sentinel in self.others:
            sentinel.start()
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.others)
        return f"redis+sentinel://{hosts}/{SERVICE}/0" + ("?wait_replicas=1" if self.sync else "")

    def _replica_of(self, primary: RedisServer, port: int | None) -> RedisServer:
        through = self.link.to(primary.port)
        return RedisServer(port=port, args=(*self.common, "--replicaof", "127.0.0.1", str(through))).start()

    def _settle(self) -> None:
        replica = self.replica
        assert replica is not None
        _until(lambda: replica.client().info("replication")["master_link_status"] == "up", "the link")

    def _promote(self, replica: RedisServer) -> None:
        """Sentinel does it: wait until most sentinels name the replica and it says it is a primary."""
        wanted = ("127.0.0.1", replica.port)
        sentinels = [s for s in self.others if isinstance(s, RedisSentinel)]
        _until(
            lambda: (
                sum(s.primary_address() == wanted for s in sentinels) >= 2
                and replica.client().info("replication")["role"] == "master"
            ),
            "Sentinel promoting the replica",
        )


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
