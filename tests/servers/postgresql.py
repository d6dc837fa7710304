"""Throwaway PostgreSQL servers for the PostgreSQL backend's tests (a pytest plugin).

``postgresql_url`` (session) is ``$GOMASTER_TEST_POSTGRESQL_URL`` when set, else a PostgreSQL
started here on a free port in a temp directory, with a database of its own. A URL given that
way needs a user that may create tables, roles and databases (the PostgreSQL-specific tests
do). ``private_postgresql`` (per test) is always a separate local server that a test may stop,
freeze, thaw and restart without disturbing the others.

A small own fixture rather than the pytest-postgresql plugin: that plugin runs ``pg_ctl`` as the
current user, which PostgreSQL refuses when it is root (as here), and it has no way to freeze or
restart a server. ``initdb`` and ``pg_ctl`` run as the ``postgres`` user through ``runuser``
(when the tests run as root), exactly as SERVERS.md measured.

``pg_ctl`` detaches the postmaster from the test run, so a parent-death signal on it is not
possible. A tiny watchdog process (which does get one) shuts the server down and deletes its
directory if the test run dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlencode

import psycopg
import pytest

from tests.helpers import free_port

ENV_URL = "GOMASTER_TEST_POSTGRESQL_URL"
#: Where Debian puts each major version's server programs; the newest one is used.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
#: Names the directory of ``initdb`` and ``pg_ctl`` explicitly (another layout, another version).
ENV_BIN = "GOMASTER_TEST_POSTGRESQL_BIN"
#: The operating-system user the server runs as when the tests run as root, which PostgreSQL
#: refuses; as any other user the server simply runs as that user.
OS_USER = "postgres"
#: The superuser initdb creates; it logs in over TCP without a password (see ``_HBA``).
SUPERUSER = "postgres"
TEST_DATABASE = "gomaster_test"
#: How long a server may take to start, and to stop before it is killed.
START_TIMEOUT = 30.0
#: initdb writes a whole cluster; on a machine busy with other test runs that can take a while.
INITDB_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
FREEZE_PAUSE = 0.005
_LOG_TAIL = 4000
_PR_SET_PDEATHSIG = 1
#: Process states that answer nothing: stopped, traced, or exited but not yet reaped (a stopped
#: postmaster cannot reap its children).
_NOT_RUNNING = ("T", "t", "Z", "X")
#: The superuser is trusted on loopback; every other role must give its password, so tests can
#: check what a wrong one does.
_HBA = """\
local all all trust
host all {superuser} 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""
#: Settings for speed (nothing here needs durability) and a log a failing test can show.
_SERVER_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)

_prctl = ctypes.CDLL(None, use_errno=True).prctl


def server_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``, or a RuntimeError saying how to get one."""
    configured = os.environ.get(ENV_BIN)
    candidates = [Path(configured)] if configured else []
    with contextlib.suppress(OSError):
        versions = [d for d in DEBIAN_BINARIES.iterdir() if d.name.isdigit()]
        candidates += [d / "bin" for d in sorted(versions, key=lambda d: int(d.name), reverse=True)]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    searched = ", ".join(map(str, candidates)) or "PATH"
    raise RuntimeError(
        f"no PostgreSQL server programs (initdb, pg_ctl) found in {searched}; "
        f"install them (apt-get install postgresql), set {ENV_BIN}, or set {ENV_URL} to a running server"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _die_with_parent() -> None:
    """Runs in the watchdog before exec: it gets SIGTERM when the test run goes away.

    It only calls a libc function looked up in advance: nothing that could wait on a lock
    another thread held at fork time.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


#: The watchdog: on SIGTERM (its parent died) it continues and kills the server by the PIDs in
#: its own data directory, then deletes the directory. ``stop()`` ends it first.
_WATCHDOG = """
import os, shutil, signal, sys, time
base, data, parent = sys.argv[1], sys.argv[2], int(sys.argv[3])

def family():
    try:
        with open(os.path.join(data, "postmaster.pid")) as f:
            pid = int(f.readline())
    except (OSError, ValueError):
        return None, []
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return pid, kids

def reap(*_):
    pid, kids = family()
    if pid is not None:
        for each in (pid, *kids):
            try:
                os.kill(each, signal.SIGCONT)
            except OSError:
                pass
        try:
            os.kill(pid, signal.SIGQUIT)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(base, ignore_errors=True)
    os._exit(0)

signal.signal(signal.SIGTERM, reap)
if os.getppid() != parent:
    reap()
while True:
    signal.pause()
"""


class PostgreSQLServer:
    """One PostgreSQL cluster in its own temp directory, on its own port, controlled by PID.

    ``start()`` runs initdb on first use and returns once the server accepts connections;
    ``restart()`` keeps the data; ``freeze()``/``thaw()`` stop and continue the postmaster and
    every backend (each is a process of its own), as a hung host or a VM pause would;
    ``cleanup()`` stops it and deletes its directory.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = Path(tempfile.mkdtemp(prefix="gomaster-postgresql-"))
        self.bin = server_binaries()
        if _as_root():
            self.base.chmod(0o755)
            shutil.chown(self.base, OS_USER, OS_USER)
        self.datadir = self.base / "data"
        self.log = self.base / "server.log"
        self.pid: int | None = None
        self.frozen = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostgreSQLServer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

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

    def log_text(self) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-_LOG_TAIL:]
        return "(no server log)"

    def _as_postgres(self, *command: str, log: Path, timeout: float) -> None:
        """Run ``command`` as the postgres user in a process group of its own, so a command that
        overruns ``timeout`` is killed with everything it started (initdb's single-user backend)."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                (["runuser", "-u", OS_USER, "--"] if _as_root() else []) + list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        if code != 0:
            text = log.read_text(errors="replace")[-_LOG_TAIL:]
            outcome = f"did not finish within {timeout} s" if code is None else f"failed ({code})"
            raise RuntimeError(f"{Path(command[0]).name} {outcome}:\n{text}\n{self.log_text()}")

    def _initdb(self) -> None:
        initdb = str(self.bin / "initdb")
        args = [
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        self._as_postgres(initdb, *args, log=self.base / "initdb.log", timeout=INITDB_TIMEOUT)
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(_HBA.format(superuser=SUPERUSER))
        if _as_root():
            shutil.chown(hba, OS_USER, OS_USER)

    def start(self) -> PostgreSQLServer:
        """Start the server (running initdb first if needed) and wait until it accepts connections."""
        if self.pid is not None:
            return self
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(  # the hook is async-signal-safe (see _die_with_parent)
                [sys.executable, "-c", _WATCHDOG, str(self.base), str(self.datadir), str(os.getpid())],
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        if not self.datadir.exists():
            self._initdb()
        options = f"-p {self.port} -k {self.base} " + " ".join(f"-c {s}" for s in _SERVER_SETTINGS)
        pg_ctl = str(self.bin / "pg_ctl")
        args = [
            "-D",
            str(self.datadir),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            options,
        ]
        self._as_postgres(pg_ctl, *args, "start", log=self.base / "pg_ctl.log", timeout=START_TIMEOUT + 5)
        self.pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
        self.frozen = False
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.admin().close()
                return
            except psycopg.Error as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL on port {self.port} did not answer within {START_TIMEOUT} s "
                        f"({exc}):\n{self.log_text()}"
                    ) from exc
            time.sleep(FREEZE_PAUSE * 10)

    def _children(self) -> list[int]:
        """PIDs of the postmaster's children: its backends and background workers."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The parent PID is the second field after the command name, which is in parentheses.
                if int(stat.read_text().rpartition(")")[2].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return found

    def _signal_all(self, signum: int) -> None:
        assert self.pid is not None, "server is not running"
        for pid in (self.pid, *self._children()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _postmaster(self) -> int | None:
        """The running postmaster's PID: ours, or (after a start that failed half-way) the one in
        its PID file, provided that process really is a postgres."""
        if self.pid is not None:
            return self.pid
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            if Path(f"/proc/{pid}/comm").read_text().strip() == "postgres":
                return pid
        return None

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (thawing first if frozen), SIGKILL by PID if that fails."""
        pid = self._postmaster()
        if pid is None:
            return
        if self.frozen:
            self.thaw()
        self.pid = None
        try:
            args = ["-D", str(self.datadir), "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT))]
            self._as_postgres(
                str(self.bin / "pg_ctl"),
                *args,
                "stop",
                log=self.base / "pg_ctl.log",
                timeout=STOP_TIMEOUT + 5,
            )
        except RuntimeError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP the postmaster first (so it forks nothing new), then every child, and return
        once all of them have stopped: the kernel still accepts connections, nothing answers."""
        assert self.pid is not None, "server is not running"
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True
        self._signal_all(signal.SIGSTOP)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not all(self._stopped(pid) for pid in (self.pid, *self._children())):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL {self.pid} did not stop on SIGSTOP")
            time.sleep(FREEZE_PAUSE)

    @staticmethod
    def _stopped(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return True  # gone: it answers nothing either
        return state in _NOT_RUNNING

    def thaw(self) -> None:
        """SIGCONT every process of the server after ``freeze()``."""
        self._signal_all(signal.SIGCONT)
        self.frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and its watchdog, and delete the directory."""
        try:
            self.stop()
        finally:
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None:
                watchdog.kill()
                watchdog.wait()
            shutil.rmtree(self.base, ignore_errors=True)


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
