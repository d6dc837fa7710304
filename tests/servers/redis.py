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
configuration. The server gets a parent-death signal, so a killed test run leaves none behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.helpers import free_port
from tests.servers.freezing import stop_and_wait

ENV_URL = "GOMASTER_TEST_REDIS_URL"
#: How long a server may take to answer PING after it was started.
START_TIMEOUT = 10.0
#: How long SIGTERM may take before SIGKILL.
STOP_TIMEOUT = 10.0
PING_PAUSE = 0.01
PING_TIMEOUT = 0.5
_LOG_TAIL = 4000
_PR_SET_PDEATHSIG = 1

_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """Runs in the child before exec: only a libc call looked up in advance, nothing that could
    wait on a lock another thread held at fork time."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RedisServer:
    """One ``redis-server`` in its own temp directory, on its own port, controlled by PID.

    ``restart()`` keeps the port (and, without persistence, loses every key, which is what the
    token-counter tests need); ``freeze()``/``thaw()`` stop and continue the process, as a hung
    host or a VM pause would; ``cleanup()`` stops it and deletes its directory.
    """

    def __init__(
        self, *, port: int | None = None, args: Sequence[str] = (), password: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.args = list(args)
        self.base = Path(tempfile.mkdtemp(prefix="gomaster-redis-"))
        self.log = self.base / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    @property
    def pid(self) -> int:
        """The server's PID (it must be running)."""
        assert self._process is not None, "server is not running"
        return self._process.pid

    def url(self, *, password: str | None = None, **query: str) -> str:
        """A ``redis://`` URL for this server (database 0), with the server's password by default."""
        secret = self.password if password is None else password
        auth = f":{quote(secret, safe='')}@" if secret else ""
        tail = "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
        return f"redis://{auth}127.0.0.1:{self.port}/0" + (f"?{tail}" if tail else "")

    def client(self) -> redis.Redis:
        """A plain redis-py client, to look at and spoil keys by hand."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),
        )

    def command(self) -> list[str]:
        """The foreground server, loopback only, no persistence unless ``args`` says otherwise."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base),
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
        ]
        if self.password:
            command += ["--requirepass", self.password]
        return command + self.args

    def tail(self) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-_LOG_TAIL:]
        return "(no log)"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; raise with its log if it does not."""
        if self._process is not None:
            return self
        self._process = subprocess.Popen(  # the hook is async-signal-safe (see _die_with_parent)
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.frozen = False
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=PING_TIMEOUT,
            socket_connect_timeout=PING_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    code, self._process = self._process.returncode, None
                    raise RuntimeError(f"redis-server exited with {code} while starting:\n{self.tail()}")
                try:
                    client.ping()
                    return
                except redis.ResponseError:
                    return  # NOAUTH and friends: the server is up, it wants a password
                except redis.RedisError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server on port {self.port} did not answer PING within "
                            f"{START_TIMEOUT} s ({exc}):\n{self.tail()}"
                        ) from exc
                time.sleep(PING_PAUSE)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM by PID (continuing it first if frozen), then SIGKILL after ``STOP_TIMEOUT``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            self.frozen = False
            return
        process.send_signal(signal.SIGTERM)
        if self.frozen:
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.frozen = False

    def kill(self) -> None:
        """Crash the server: SIGKILL, no shutdown, nothing saved."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP, returning once every thread has stopped: the kernel still accepts connections
        and data, but nothing answers."""
        assert self._process is not None, "server is not running"
        stop_and_wait(self._process.pid, "redis-server", STOP_TIMEOUT)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        assert self._process is not None, "server is not running"
        self._process.send_signal(signal.SIGCONT)
        self.frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port; without persistence every key is gone."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


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
