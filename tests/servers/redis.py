"""Throwaway Redis servers for the Redis backend's tests (a pytest plugin).

``redis_url`` (session) is ``$GOMASTER_TEST_REDIS_URL`` when set, else one ``redis-server``
started here on a free port in a temp directory, without persistence (``--save ''
--appendonly no``), as SERVERS.md measured. ``private_redis`` (per test) is always a separate
local server that a test may stop, freeze, thaw, restart or flush without disturbing the others;
a test that needs other server options (``--requirepass``, ``--appendonly yes``) builds a
:class:`RedisServer` itself.

A small own fixture rather than pytest-redis: the tests need to freeze and restart one server by
PID on the same port and start servers with their own options, and ``redis-server`` in the
foreground (``--daemonize no``) is all that takes, with nothing read from the system's Redis
configuration.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers.base import CONNECT_TIMEOUT, ThrowawayServer

ENV_URL = "GOMASTER_TEST_REDIS_URL"
#: Server options that keep every write across a restart (an append-only file, fsync'd each second).
PERSISTENT = ("--appendonly", "yes")


class RedisServer(ThrowawayServer):
    """One ``redis-server``; ``restart()`` keeps the port and, without persistence, loses every
    key (which the token-counter tests need)."""

    name = "redis"
    not_ready = (redis.RedisError, OSError)

    def __init__(
        self, *, port: int | None = None, args: Sequence[str] = (), password: str | None = None
    ) -> None:
        super().__init__(port=port)
        self.password = password
        self.args = list(args)

    def url(self, *, password: str | None = None, **query: str) -> str:
        """A ``redis://`` URL for this server (database 0), with the server's password by default."""
        secret = self.password if password is None else password
        auth = f":{quote(secret, safe='')}@" if secret else ""
        tail = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
        return f"redis://{auth}127.0.0.1:{self.port}/0" + (f"?{tail}" if tail else "")

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A plain redis-py client, to look at and spoil keys by hand."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def command(self) -> list[str]:
        """The foreground server, loopback only, no persistence unless ``args`` says otherwise."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.base), "--daemonize", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        return command + self.args

    def ping(self) -> None:
        client = self.client(CONNECT_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()


class RedisSentinel(ThrowawayServer):
    """One ``redis-server --sentinel`` watching ``primary`` as service ``service``, with a
    quorum of ``quorum``, and quick to act (down after ``down_after`` ms). Each has its own
    config file, which Sentinel rewrites."""

    name = "redis-sentinel"
    not_ready = (redis.RedisError, OSError)

    def __init__(
        self, primary: RedisServer, *, service: str = "m", quorum: int = 2, down_after: int = 500
    ) -> None:
        super().__init__()
        self.primary, self.service, self.quorum, self.down_after = primary, service, quorum, down_after
        self.config = self.base / "sentinel.conf"

    def prepare(self) -> None:
        if self.config.exists():
            return
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.base}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after}\n"
            f"sentinel failover-timeout {self.service} 2000\n"
        )

    def command(self) -> list[str]:
        return ["redis-server", str(self.config), "--sentinel", "--daemonize", "no"]

    def primary_address(self) -> tuple[str, int] | None:
        """The primary this sentinel names for its service now."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=CONNECT_TIMEOUT)
        try:
            found = client.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[no-untyped-call]
        finally:
            client.close()
        match found:  # redis-py parses the reply into (host, port) by the command's name
            case [bytes() | str() as host, bytes() | str() | int() as port]:
                return host.decode() if isinstance(host, bytes) else host, int(port)
        return None

    def ping(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=CONNECT_TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The Redis server for the whole run: ``$GOMASTER_TEST_REDIS_URL``, or one started here."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured
        return
    with RedisServer() as server:
        yield server.url()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A fresh server for one test, which it may stop, freeze, flush or restart at will."""
    with RedisServer() as server:
        yield server
