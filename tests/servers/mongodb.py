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
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.servers.base import CONNECT_TIMEOUT, PAUSE, START_TIMEOUT, ThrowawayServer

ENV_URL = "GOMASTER_TEST_MONGODB_URL"
DATABASE = "gomaster_test"
#: Kept for callers that name it: how long a start may take.
READY_TIMEOUT = START_TIMEOUT


class ServerProcess(ThrowawayServer):
    """A MongoDB wire-protocol server: its storage under ``workdir``, ready once it answers ``ping``."""

    not_ready = (PyMongoError, OSError)

    def __init__(self, workdir: Path | None = None, *, port: int | None = None) -> None:
        super().__init__(port=port, workdir=workdir)
        self.workdir = self.base
        self.storage = self.base / "data"

    @property
    def url(self) -> str:
        """The URL a backend connects to, with a database of its own."""
        return f"mongodb://127.0.0.1:{self.port}/{DATABASE}"

    def client(self, timeout: float = 5.0) -> MongoClient[dict[str, Any]]:
        """A plain client straight to this server, to look at and spoil documents by hand."""
        return MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            serverSelectionTimeoutMS=int(timeout * 1000),
            connectTimeoutMS=int(timeout * 1000),
        )

    def prepare(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)

    def ping(self) -> None:
        with self.client(CONNECT_TIMEOUT) as client:
            client.admin.command("ping")


class SecantusServer(ServerProcess):
    """SecantusDB (``python -m secantus``), a one-node replica set named ``secantus``."""

    name = "secantus"

    def __init__(
        self, workdir: Path | None = None, *, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
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

    name = "mongod"
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

    def start(self, timeout: float = START_TIMEOUT) -> MongodServer:
        """Start, then initiate the replica set (once) and wait until this member is primary."""
        super().start(timeout)
        with self.client(timeout) as client:
            members = [{"_id": 0, "host": f"127.0.0.1:{self.port}"}]
            with contextlib.suppress(PyMongoError):  # already initiated when restarting
                client.admin.command("replSetInitiate", {"_id": self.REPLICA_SET, "members": members})
            deadline = time.monotonic() + timeout
            while not client.admin.command("hello").get("isWritablePrimary"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mongod on port {self.port} never became primary:\n{self.log_text()}")
                time.sleep(PAUSE)
        return self


@pytest.fixture(scope="session")
def secantus_server() -> Iterator[SecantusServer]:
    """One SecantusDB for the whole session."""
    with SecantusServer() as server:
        yield server


@pytest.fixture(scope="session")
def mongodb_url(request: pytest.FixtureRequest) -> str:
    """``$GOMASTER_TEST_MONGODB_URL`` if set, else the session's SecantusDB."""
    configured = os.environ.get(ENV_URL)
    if configured:
        return configured
    server: SecantusServer = request.getfixturevalue("secantus_server")
    return server.url


@pytest.fixture
def private_mongodb() -> Iterator[SecantusServer]:
    """A SecantusDB of this test's own, for freezing, restarting and killing."""
    with SecantusServer() as server:
        yield server


@pytest.fixture(scope="session")
def mongod_url() -> Iterator[str]:
    """A real mongod for the session, when one is installed."""
    if shutil.which("mongod") is None:
        pytest.skip("no mongod on PATH")
    with MongodServer() as server:
        yield server.url
