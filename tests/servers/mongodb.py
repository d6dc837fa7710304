"""Throwaway MongoDB wire-protocol servers for the tests: SecantusDB in a subprocess.

``mongodb_url`` is ``$GOMASTER_TEST_MONGODB_URL`` when set, else one SecantusDB started for the
whole session. ``private_mongodb`` gives a test its own server to freeze, restart or kill.
``mongod_url`` starts a real one-node ``mongod`` replica set when ``mongod`` is on PATH (and
skips otherwise); the contract table does not use it yet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.helpers import free_port
from tests.servers.freezing import stop_and_wait

ENV_URL = "GOMASTER_TEST_MONGODB_URL"
DATABASE = "gomaster_test"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_PING_TIMEOUT_MS = 500
_POLL = 0.05
_LOG_TAIL = 4000


class ServerProcess:
    """One database server we started: its port, its files, its PID, and the signals we send it.

    ``restart`` reuses the port and the storage, so clients see the same server come back.
    """

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = workdir
        self.storage = workdir / "data"
        self.log = workdir / "server.log"
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL a backend connects to, with a database of its own."""
        return f"mongodb://127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        assert self._process is not None, "server not started"
        return self._process.pid

    def command(self) -> list[str]:
        """The command line that starts the server in the foreground."""
        raise NotImplementedError

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the server and return once it answers ``ping``; raise with its log if it does not."""
        self.storage.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            serverSelectionTimeoutMS=_PING_TIMEOUT_MS,
            connectTimeoutMS=_PING_TIMEOUT_MS,
        )
        try:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"{self.command()[0]} exited with {self._process.returncode}:\n{self.tail()}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError as exc:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"server on port {self.port} not ready in {timeout} s ({exc}):\n{self.tail()}"
                        ) from exc
                time.sleep(_POLL)
        finally:
            client.close()

    def tail(self) -> str:
        """The end of the server's log, for error messages."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-_LOG_TAIL:]
        return "<no log>"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT``; a frozen server is thawed first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)
            process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Crash the server: SIGKILL, no shutdown."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def freeze(self) -> None:
        """SIGSTOP, returning once every thread has stopped: the server keeps its sockets open
        but answers nothing (a hung host)."""
        assert self.pid is not None, "server is not running"
        stop_and_wait(self.pid, "server", STOP_TIMEOUT)

    def thaw(self) -> None:
        """SIGCONT: a frozen server carries on where it stopped."""
        os.kill(self.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same port with the same storage."""
        self.stop()
        self.start()


class SecantusServer(ServerProcess):
    """SecantusDB (``python -m secantus``), a one-node replica set named ``secantus``."""

    def __init__(self, workdir: Path, *, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(workdir, port=port)
        self.extra_args = list(extra_args)

    def command(self) -> list[str]:
        """Run by this interpreter, so the venv's secantus is the one used."""
        return [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage),
            "--log-level",
            "WARNING",
            *self.extra_args,
        ]


class MongodServer(ServerProcess):
    """A real ``mongod`` as a one-node replica set, so majority writes and ``$$NOW`` behave as in
    production. Untested here: there is no mongod on this machine."""

    REPLICA_SET = "gomaster"

    def command(self) -> list[str]:
        """mongod in the foreground on loopback with a small cache."""
        return [
            "mongod",
            "--port",
            str(self.port),
            "--bind_ip",
            "127.0.0.1",
            "--dbpath",
            str(self.storage),
            "--replSet",
            self.REPLICA_SET,
            "--wiredTigerCacheSizeGB",
            "0.25",
        ]

    @property
    def url(self) -> str:
        """Names the replica set, so the driver waits for a primary."""
        return f"mongodb://127.0.0.1:{self.port}/{DATABASE}?replicaSet={self.REPLICA_SET}"

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start, then initiate the replica set (once) and wait until this member is primary."""
        super().start(timeout)
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            serverSelectionTimeoutMS=int(timeout * 1000),
        )
        try:
            members = [{"_id": 0, "host": f"127.0.0.1:{self.port}"}]
            with contextlib.suppress(PyMongoError):  # already initiated when restarting
                client.admin.command("replSetInitiate", {"_id": self.REPLICA_SET, "members": members})
            deadline = time.monotonic() + timeout
            while not client.admin.command("hello").get("isWritablePrimary"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mongod on port {self.port} never became primary:\n{self.tail()}")
                time.sleep(_POLL)
        finally:
            client.close()


@pytest.fixture(scope="session")
def secantus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    """One SecantusDB for the whole session."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongodb_url(request: pytest.FixtureRequest) -> str:
    """``$GOMASTER_TEST_MONGODB_URL`` if set, else the session's SecantusDB."""
    configured = os.environ.get(ENV_URL)
    if configured:
        return configured
    server: SecantusServer = request.getfixturevalue("secantus_server")
    return server.url


@pytest.fixture
def private_mongodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecantusServer]:
    """A SecantusDB of this test's own, for freezing, restarting and killing."""
    server = SecantusServer(tmp_path_factory.mktemp("secantus-private"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongod_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real mongod for the session, when one is installed."""
    if shutil.which("mongod") is None:
        pytest.skip("no mongod on PATH")
    server = MongodServer(tmp_path_factory.mktemp("mongod"))
    server.start()
    yield server.url
    server.stop()
