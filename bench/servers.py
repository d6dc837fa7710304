"""Throwaway servers for the benchmarks, started from the test fixtures' server classes.

Every server listens on 127.0.0.1 on a free port, lives in a temp directory, and is stopped by
PID when the ``Servers`` context ends. Only the backends whose gomaster module exists are
offered (``gomaster_backends``); Redis also serves the tooz peer.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

#: Backends in the order every table lists them.
ORDER = ("sqlite", "mysql", "mongodb", "postgresql", "redis")
#: Enough connections for the scale benchmark's 1,000 electors plus everyone else.
MAX_CONNECTIONS = 2000
DATABASE = "gomaster_bench"


def gomaster_backends() -> list[str]:
    """The backends this checkout of gomaster has a module for (memory excluded)."""
    return [kind for kind in ORDER if importlib.util.find_spec(f"gomaster.backends.{kind}") is not None]


@dataclass(frozen=True, slots=True)
class Server:
    """One running backend: its gomaster URL, what it reports as its version, and its PID."""

    kind: str
    url: str
    version: str
    pid: int | None


class Servers:
    """Starts servers on demand and stops every one of them on exit."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._started: dict[str, Server] = {}
        self.scratch = Path(tempfile.mkdtemp(prefix="gomaster-bench-"))

    def __enter__(self) -> Servers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._stack.close()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def get(self, kind: str) -> Server:
        """The server for ``kind``, started on first use."""
        if kind not in self._started:
            self._started[kind] = getattr(self, f"_start_{kind}")()
        return self._started[kind]

    @property
    def running(self) -> dict[str, Server]:
        """Every server started so far."""
        return dict(self._started)

    def _start_sqlite(self) -> Server:
        return Server(
            "sqlite", f"sqlite:///{self.scratch / 'bench.db'}", f"SQLite {sqlite3.sqlite_version}", None
        )

    def _start_mysql(self) -> Server:
        import pymysql

        from tests.servers.mysql import MariaDBServer

        server = self._stack.enter_context(MariaDBServer())
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SET GLOBAL max_connections = {MAX_CONNECTIONS}")
                cursor.execute("SELECT VERSION()")
                row = cursor.fetchone()
        finally:
            conn.close()
        version = f"MariaDB {row[0] if row else '?'}"
        return Server("mysql", server.url(DATABASE, create_db="true"), version, server.pid)

    def _start_mongodb(self) -> Server:
        from pymongo import MongoClient

        from tests.servers.mongodb import SecantusServer

        server = SecantusServer(self.scratch / "secantus")
        server.start()
        self._stack.callback(server.stop)
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
        )
        try:
            reported = client.admin.command("buildInfo").get("version", "?")
        finally:
            client.close()
        package = importlib.metadata.version("secantusdb")
        return Server("mongodb", server.url, f"SecantusDB {package} (reports MongoDB {reported})", server.pid)

    def _start_postgresql(self) -> Server:
        from tests.servers.postgresql import PostgreSQLServer, create_database

        server = self._stack.enter_context(PostgreSQLServer())
        create_database(server, DATABASE)
        with server.admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return Server("postgresql", server.url(DATABASE), f"PostgreSQL {row[0] if row else '?'}", server.pid)

    def _start_redis(self) -> Server:
        from tests.servers.redis import RedisServer

        server = self._stack.enter_context(RedisServer())
        client = server.client()
        try:
            version = str(client.info("server").get("redis_version", "?"))
        finally:
            client.close()
        return Server("redis", server.url(), f"Redis {version}", server.pid)
