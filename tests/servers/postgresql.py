"""Throwaway PostgreSQL servers for the PostgreSQL backend's tests (a pytest plugin).

``postgresql_url`` (session) is ``$GOMASTER_TEST_POSTGRESQL_URL`` when set, else a PostgreSQL
started here on a free port in a temp directory, with a database of its own. A URL given that
way needs a user that may create tables, roles and databases (the PostgreSQL-specific tests
do). ``private_postgresql`` (per test) is always a separate local server that a test may stop,
freeze, thaw and restart without disturbing the others.

A small own fixture rather than the pytest-postgresql plugin: that plugin runs ``pg_ctl`` as the
current user, which PostgreSQL refuses when it is root (as here), and it has no way to freeze or
restart a server. ``postgres`` runs in the foreground (no ``pg_ctl``, so it stays our child and
the shared watchdog covers it), as the ``postgres`` user when the tests run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest

from tests.servers.base import ThrowawayServer

ENV_URL = "GOMASTER_TEST_POSTGRESQL_URL"
#: Where Debian puts each major version's server programs; the newest one is used.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
#: Names the directory of ``initdb`` and ``postgres`` explicitly (another layout, another version).
ENV_BIN = "GOMASTER_TEST_POSTGRESQL_BIN"
#: The superuser initdb creates; it logs in over TCP without a password (see ``_HBA``).
SUPERUSER = "postgres"
TEST_DATABASE = "gomaster_test"
#: The superuser is trusted on loopback; every other role must give its password, so tests can
#: check what a wrong one does.
_HBA = """\
local all all trust
host all {superuser} 127.0.0.1/32 trust
host replication {superuser} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""
#: Settings for speed (nothing here needs durability).
_SERVER_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)


def server_binaries() -> Path:
    """The directory holding ``initdb`` and ``postgres``, or a RuntimeError saying how to get one."""
    configured = os.environ.get(ENV_BIN)
    candidates = [Path(configured)] if configured else []
    with contextlib.suppress(OSError):
        versions = [d for d in DEBIAN_BINARIES.iterdir() if d.name.isdigit()]
        candidates += [d / "bin" for d in sorted(versions, key=lambda d: int(d.name), reverse=True)]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    searched = ", ".join(map(str, candidates)) or "PATH"
    raise RuntimeError(
        f"no PostgreSQL server programs (initdb, postgres) found in {searched}; "
        f"install them (apt-get install postgresql), set {ENV_BIN}, or set {ENV_URL} to a running server"
    )


class PostgreSQLServer(ThrowawayServer):
    """One PostgreSQL cluster; ``start()`` runs initdb on first use. ``freeze()`` stops the
    postmaster and every backend (each is a process of its own)."""

    name = "postgresql"
    #: Fast shutdown: disconnect the clients, do not wait for them.
    stop_signal = signal.SIGINT
    not_ready = (psycopg.Error, OSError)
    #: PostgreSQL refuses to run as root.
    run_as = "postgres"

    def __init__(self, port: int | None = None, *, settings: Sequence[str] = ()) -> None:
        super().__init__(port=port)
        #: Server settings (``name=value``) on top of the defaults, which they override.
        self.settings = tuple(settings)
        self.bin = server_binaries()
        self.datadir = self.base / "data"
        self.base.chmod(0o755)
        self.give_to_server_user(self.base)

    def url(
        self, database: str = TEST_DATABASE, *, user: str = SUPERUSER, password: str = "", **query: str
    ) -> str:
        """A ``postgresql://`` URL for ``user`` on this server."""
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        tail = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}{tail}"

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection, for setting up and spoiling things by hand."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            dbname=database,
            autocommit=True,
            connect_timeout=5,
        )

    def prepare(self) -> None:
        if self.datadir.exists():
            return
        self.setup(
            str(self.bin / "initdb"),
            *("-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8"),
            *("--locale=C", "--no-sync"),
        )
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(_HBA.format(superuser=SUPERUSER))
        self.give_to_server_user(hba)

    def command(self) -> list[str]:
        settings = [arg for setting in (*_SERVER_SETTINGS, *self.settings) for arg in ("-c", setting)]
        where = ["-D", str(self.datadir), "-p", str(self.port), "-k", str(self.base)]
        return [str(self.bin / "postgres"), *where, *settings]

    def ping(self) -> None:
        self.admin().close()


class PostgreSQLStandby(PostgreSQLServer):
    """A streaming standby of ``primary``, copied from it by ``pg_basebackup`` at first start.
    It reports to the primary as ``name``, so ``synchronous_standby_names`` can name it."""

    name = "postgresql-standby"

    def __init__(
        self,
        primary: PostgreSQLServer,
        *,
        name: str = "s1",
        settings: Sequence[str] = (),
        port: int | None = None,
        through: int | None = None,
    ) -> None:
        super().__init__(port, settings=settings)
        self.primary = primary
        self.application_name = name
        #: The port it replicates through (a proxy's), the primary's own by default.
        self.through = through or primary.port

    def prepare(self) -> None:
        if self.datadir.exists():
            return
        source = f"host=127.0.0.1 port={self.through} user={SUPERUSER}"
        source += f" application_name={self.application_name}"
        self.setup(
            str(self.bin / "pg_basebackup"),
            *("-d", source, "-D", str(self.datadir), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"),
        )

    def promote(self) -> None:
        """Make this standby a primary and return once it accepts writes."""
        with self.admin() as conn:
            conn.execute("SELECT pg_promote(wait => true)")

    def has_database(self, name: str = TEST_DATABASE) -> bool:
        """Whether ``name`` exists here yet (a standby replays what the primary committed)."""
        with self.admin() as conn:
            return (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
            )

    def streaming(self) -> bool:
        """Whether the primary sees this standby streaming (and, when named, as synchronous)."""
        with self.primary.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_replication"
                " WHERE application_name = %s AND state = 'streaming'",
                (self.application_name,),
            ).fetchone()
        return row is not None and row[0] == 1


def create_database(server: PostgreSQLServer, name: str = TEST_DATABASE) -> None:
    """Create ``name`` on ``server`` (the lock backend itself never creates databases)."""
    with server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """The PostgreSQL server for the whole run, as a URL for a database of the tests' own."""
    configured = os.environ.get(ENV_URL)
    if configured:
        yield configured
        return
    with PostgreSQLServer() as server:
        create_database(server)
        yield server.url()


@pytest.fixture
def private_postgresql() -> Iterator[PostgreSQLServer]:
    """A fresh server with the test database, which one test may stop, freeze or restart at will."""
    with PostgreSQLServer() as server:
        create_database(server)
        yield server
