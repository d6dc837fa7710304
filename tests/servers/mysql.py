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
from urllib.parse import urlencode

import pymysql
import pytest

from tests.helpers import free_port
from tests.servers.freezing import stop_and_wait

ENV_URL = "GOMASTER_TEST_MYSQL_URL"
#: How long a server may take to answer a ping after it was started.
START_TIMEOUT = 30.0
#: How long SIGTERM may take before SIGKILL.
STOP_TIMEOUT = 10.0
PING_PAUSE = 0.05
PING_TIMEOUT = 1
TEST_DATABASE = "gomaster_test"
_PR_SET_PDEATHSIG = 1


_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """Runs in the child before exec, so a killed test run leaves no server behind.

    It only calls a libc function looked up in advance: nothing that could wait on a lock
    another thread held at fork time.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class MariaDBServer:
    """One mariadbd in its own temp directory, on its own port, controlled by PID.

    ``start()`` installs the data directory on first use and waits until root can log in;
    ``restart()`` keeps the data; ``freeze()``/``thaw()`` stop and continue the process, as a
    hung server or a VM pause would; ``cleanup()`` stops it and deletes its directory.
    """

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        #: More ``mariadbd`` options, such as ``--ssl-cert=...`` for a server that offers TLS.
        self.extra_args = tuple(extra_args)
        self.base = Path(tempfile.mkdtemp(prefix="gomaster-mariadb-"))
        self.datadir = self.base / "data"
        self.error_log = self.base / "error.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self._process.pid if self._process is not None else None

    def url(self, database: str = TEST_DATABASE, **query: str) -> str:
        """A ``mysql://`` URL for root on this server."""
        tail = f"?{urlencode(query)}" if query else ""
        return f"mysql://root@127.0.0.1:{self.port}/{database}{tail}"

    def log_text(self) -> str:
        """The server's error log, for failure messages."""
        with contextlib.suppress(OSError):
            return self.error_log.read_text(errors="replace")
        return "(no error log)"

    def _install(self) -> None:
        install_log = self.base / "install.log"
        with install_log.open("wb") as out:
            done = subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}):\n{install_log.read_text()}")

    def start(self) -> MariaDBServer:
        """Start the server (installing its data directory first if needed) and wait until it answers."""
        if self._process is not None:
            return self
        if not self.datadir.exists():
            self._install()
        command = [
            "mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--socket={self.base / 'mysqld.sock'}",
            f"--pid-file={self.base / 'mysqld.pid'}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--log-error={self.error_log}",
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",
            "--skip-log-bin",
            *self.extra_args,
        ]
        self._process = subprocess.Popen(  # the hook is async-signal-safe (see _die_with_parent)
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.frozen = False
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"mariadbd exited with {code} while starting:\n{self.log_text()}")
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", connect_timeout=PING_TIMEOUT
                ).close()
                return
            except pymysql.MySQLError as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mariadbd on port {self.port} did not answer within {START_TIMEOUT} s "
                        f"({exc}):\n{self.log_text()}"
                    ) from exc
            time.sleep(PING_PAUSE)

    def stop(self) -> None:
        """SIGTERM by PID (continuing it first if frozen), then SIGKILL after ``STOP_TIMEOUT``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            if self.frozen:
                process.send_signal(signal.SIGCONT)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP, returning once every thread has stopped: the kernel still accepts
        connections, but nothing answers."""
        assert self._process is not None, "server is not running"
        stop_and_wait(self._process.pid, "mariadbd", STOP_TIMEOUT)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        assert self._process is not None, "server is not running"
        self._process.send_signal(signal.SIGCONT)
        self.frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


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
