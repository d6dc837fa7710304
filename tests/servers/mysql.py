"""Throwaway MariaDB servers for the MySQL backend's tests (a pytest plugin).

``mysql_url`` (session) is ``$GOMASTER_TEST_MYSQL_URL`` when set, else a MariaDB started here on
a free port in a temp directory. A URL given that way needs a user that may create databases,
users and set ``GLOBAL time_zone`` (the MySQL-specific tests do), and ``?create_db=true`` unless
its database exists. ``private_mariadb`` (per test) is always a separate local server that a
test may stop, freeze, thaw and restart without disturbing the others.

A small own fixture rather than the pytest-mysql plugin: tests need to freeze and restart one
server by PID, and ``mariadb-install-db`` plus ``mariadbd`` with ``--no-defaults`` is all it
takes (see SERVERS.md), with nothing that reads the system's MySQL configuration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from urllib.parse import urlencode

import pymysql
import pymysql.cursors
import pytest

from tests.servers.base import CONNECT_TIMEOUT, START_TIMEOUT, ThrowawayServer

ENV_URL = "GOMASTER_TEST_MYSQL_URL"
TEST_DATABASE = "gomaster_test"


class MariaDBServer(ThrowawayServer):
    """One ``mariadbd`` running as root with ``--no-defaults``; ``start()`` installs the data
    directory on first use and returns once root can log in."""

    name = "mariadb"
    not_ready = (pymysql.MySQLError, OSError)

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        super().__init__(port=port)
        #: More ``mariadbd`` options, such as ``--ssl-cert=...`` for a server that offers TLS.
        self.extra_args = tuple(extra_args)
        self.datadir = self.base / "data"

    def url(self, database: str = TEST_DATABASE, **query: str) -> str:
        """A ``mysql://`` URL for root on this server."""
        tail = f"?{urlencode(query)}" if query else ""
        return f"mysql://root@127.0.0.1:{self.port}/{database}{tail}"

    def prepare(self) -> None:
        if not self.datadir.exists():
            self.setup(
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            )

    def command(self) -> list[str]:
        return [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--socket={self.base / 'mysqld.sock'}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
            *self.extra_args,
        ]

    def ping(self) -> None:
        pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", connect_timeout=CONNECT_TIMEOUT
        ).close()

    def admin(self, *statements: str) -> list[tuple[object, ...]]:
        """Run ``statements`` as root (autocommit); the rows of the last."""
        conn = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", connect_timeout=5, autocommit=True
        )
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            conn.close()


#: How long a replica may take to apply what it received before it is promoted.
PROMOTE_WITHIN = 30.0
#: Options that let a server be a primary or a replica: a binary log with global transaction IDs.
REPLICATION = ("--log-bin", "--binlog-format=ROW", "--log-slave-updates=1")


class MariaDBReplica(MariaDBServer):
    """A replica of ``primary`` (which must run with ``REPLICATION`` and a server id of its own),
    read-only as replicas are; :meth:`promote` makes it the primary, as an operator would."""

    name = "mariadb-replica"

    def __init__(
        self,
        primary: MariaDBServer,
        *,
        server_id: int = 2,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        through: int | None = None,
    ) -> None:
        super().__init__(
            port, extra_args=(*REPLICATION, f"--server-id={server_id}", "--read-only", *extra_args)
        )
        self.primary = primary
        #: The port it replicates through (a proxy's), the primary's own by default.
        self.through = through or primary.port

    def start(self, timeout: float = START_TIMEOUT) -> MariaDBReplica:
        """Start, then replicate from the primary from the start of its log."""
        super().start(timeout)
        self.admin(
            f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={self.through}, "
            "MASTER_USER='root', MASTER_USE_GTID=slave_pos",
            "START SLAVE",
        )
        return self

    def promote(self, within: float = PROMOTE_WITHIN) -> None:
        """Apply every event already received, then stop replicating and accept writes, as a
        careful operator does: ``RESET SLAVE ALL`` deletes the relay log, and with it any event
        received (and, with semi-sync, acknowledged to the primary) but not yet applied."""
        self.admin("STOP SLAVE IO_THREAD")
        deadline = time.monotonic() + within
        while not self.caught_up():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not apply its relay log within {within} s")
            time.sleep(0.02)
        self.admin("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only=0")

    def caught_up(self) -> bool:
        """Whether every transaction received from the primary has been applied here."""
        conn = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", connect_timeout=5, autocommit=True
        )
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute("SHOW SLAVE STATUS")
                status = cursor.fetchone()
                cursor.execute("SELECT @@global.gtid_slave_pos AS applied")
                applied = cursor.fetchone()
        finally:
            conn.close()
        return status is None or applied is None or status["Gtid_IO_Pos"] == applied["applied"]


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """The MySQL/MariaDB server for the whole run, as a URL that creates its test database."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured
        return
    with MariaDBServer() as server:
        yield server.url(create_db="true")


@pytest.fixture
def private_mariadb() -> Iterator[MariaDBServer]:
    """A fresh server for one test, which it may stop, freeze or restart at will."""
    with MariaDBServer() as server:
        yield server
