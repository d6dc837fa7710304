"""The lifecycle every throwaway server shares: start, stop, freeze, thaw, restart, kill, cleanup.

A subclass says how to run its server (``command``), how to prepare its data directory the first
time (``prepare``), how to tell that it answers (``ping``, raising one of ``not_ready`` until it
does), and which signal asks it to shut down (``stop_signal``). Everything else is here:

- the server runs in the foreground as a child of the test run, on its own free port, with its
  output in ``log`` and its files under ``base`` (a temp directory of its own unless a
  ``workdir`` is given, which the caller then owns);
- ``freeze()`` stops the server and every process it started (PostgreSQL's backends) and
  returns once each of their threads has really stopped: the kernel still accepts connections
  and data, nothing answers, as on a hung host or a paused VM;
- a watchdog process outlives nothing of ours: it waits on a pipe that only the test run holds
  open, and when the run dies without cleaning up (a kill, a crash), the pipe closes and the
  watchdog continues, stops and then kills the server and deletes a temp directory it owned.

A pipe rather than a parent-death signal: that signal fires when the *thread* that started the
child ends, and it is cleared when a child changes its user (PostgreSQL runs as ``postgres``).

mirakuru and port-for were read and not used: mirakuru's executors wait for a TCP port or an
HTTP answer (not a driver's ping), cannot freeze a server, and clean up from ``atexit`` and
``__del__``, which a killed run never reaches; port-for picks ports from IANA-unassigned ranges
and remembers them in a file, where asking the kernel for a free port (``free_port``) is enough.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from tests.helpers import free_port

#: How long a server may take to answer after it was started.
START_TIMEOUT = 30.0
#: How long a shutdown may take before the server is killed, and a freeze before it is an error.
STOP_TIMEOUT = 10.0
#: How long a one-off setup command (``initdb``, ``mariadb-install-db``) may run.
SETUP_TIMEOUT = 120.0
#: Between two readiness checks, and between two looks at a stopping process.
PAUSE = 0.01
#: How long one look at the port may take while the server starts.
CONNECT_TIMEOUT = 0.5
#: How much of a log a failure message shows.
LOG_TAIL = 4000
#: Process states that answer nothing: stopped, traced, exited but not yet reaped, dead.
QUIET_STATES = frozenset("TtZX")

_S = TypeVar("_S", bound="ThrowawayServer")

#: Run by ``python -I -S``: blocks until every writer of the lifeline has gone (the test run
#: ended, cleanly or not), then ends the server if it still runs and removes its directory.
#: The server is recognised by its PID and its start time, so a reused PID is never signalled.
_WATCHDOG = """
import os, shutil, signal, sys, time
fd, pid, started, stop, grace, base = sys.argv[1:]
pid, stop, grace = int(pid), int(stop), float(grace)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.read(int(fd), 4096):
    pass

def fields(p):
    try:
        with open(f"/proc/{p}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return []

def family():
    kids = [p for p in map(int, filter(str.isdigit, os.listdir("/proc")))
            if (fields(p)[1:2] or ["0"])[0] == str(pid)]
    return [pid, *kids]

def send(pids, signum):
    for p in pids:
        try:
            os.kill(p, signum)
        except OSError:
            pass

mine = fields(pid)
if mine and mine[19] == started:
    everyone = family()
    send(everyone, signal.SIGCONT)
    send([pid], stop)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and fields(pid)[:1] not in ([], ["Z"], ["X"]):
        time.sleep(0.05)
    send(everyone, signal.SIGKILL)
if base:
    shutil.rmtree(base, ignore_errors=True)
"""

_lifeline_lock = threading.Lock()
_lifeline: tuple[int, int] | None = None


def lifeline() -> int:
    """The read end of this process's lifeline pipe, whose write end only this process holds
    (both ends close on exec, so servers and other programs never hold it)."""
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None:
            _lifeline = os.pipe()
        return _lifeline[0]


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The parent PID is the second field after the command name, which is in parentheses.
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def quiet(pid: int) -> bool:
    """True when no thread of ``pid`` runs: all stopped, or the process is gone."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError, IndexError):
            states.append(stat.read_text().rpartition(")")[2].split()[0])
    return all(state in QUIET_STATES for state in states)


def signal_all(pids: Sequence[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids`` that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class ThrowawayServer:
    """One database server that the tests started and control by PID (see the module's doc)."""

    #: What the server is called in messages and in its temp directory's name.
    name: ClassVar[str] = "server"
    #: The signal that asks the server to shut down cleanly.
    stop_signal: ClassVar[int] = signal.SIGTERM
    #: What ``ping`` raises while the server does not answer yet.
    not_ready: ClassVar[tuple[type[BaseException], ...]] = (OSError,)
    #: The operating-system user the server runs as when the tests run as root (None: as is).
    run_as: ClassVar[str | None] = None

    def __init__(self, *, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port or free_port()
        #: A temp directory made here is deleted by ``cleanup``; a given ``workdir`` is the caller's.
        self.owns_base = workdir is None
        self.base = workdir or Path(tempfile.mkdtemp(prefix=f"gomaster-{self.name}-"))
        self.base.mkdir(parents=True, exist_ok=True)
        #: The server's output: standard output and error, appended across restarts.
        self.log = self.base / "server.log"
        self.frozen = False
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- what a subclass writes ---------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make what the first start needs (a data directory); called before every start."""

    def ping(self) -> None:
        """Return once the server answers a client; raise one of ``not_ready`` while it does not."""
        raise NotImplementedError

    # -- the lifecycle ------------------------------------------------------------------------

    def __enter__(self: _S) -> _S:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs."""
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        """Whether the server process is there (it may be frozen)."""
        return self._process is not None and self._process.poll() is None

    def start(self: _S, timeout: float = START_TIMEOUT) -> _S:
        """Start the server (preparing it first) and return once it answers ``ping``."""
        if self._process is not None:
            return self
        self.prepare()
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, **self._identity()
            )
        self.frozen = False
        self._watch(self._process.pid)
        self._wait_until_ready(timeout)
        return self

    def stop(self) -> None:
        """Shut the server down with ``stop_signal`` (continuing it first if frozen), SIGKILL
        after ``STOP_TIMEOUT``; its files stay for the next start."""
        process, self._process = self._process, None
        self._unwatch()
        if process is not None and process.poll() is None:
            everyone = [process.pid, *children(process.pid)]
            if self.frozen:
                signal_all(everyone, signal.SIGCONT)
            process.send_signal(self.stop_signal)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                signal_all(everyone, signal.SIGKILL)
                process.wait()
        self.frozen = False

    def kill(self) -> None:
        """Crash the server: SIGKILL to it and everything it started, no shutdown."""
        process, self._process = self._process, None
        self._unwatch()
        if process is not None and process.poll() is None:
            signal_all([process.pid, *children(process.pid)], signal.SIGKILL)
            process.wait()
        self.frozen = False

    def restart(self) -> None:
        """Stop and start again on the same port with the same files."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and delete its directory if it made it."""
        try:
            self.stop()
        finally:
            if self.owns_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def freeze(self) -> None:
        """SIGSTOP the server first (so it starts nothing new), then every process it started,
        and return once none of their threads runs."""
        pid = self._running_pid()
        os.kill(pid, signal.SIGSTOP)
        self.frozen = True
        signal_all(children(pid), signal.SIGSTOP)
        deadline = time.monotonic() + STOP_TIMEOUT
        while not all(quiet(each) for each in (pid, *children(pid))):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} {pid} did not stop on SIGSTOP")
            time.sleep(PAUSE / 2)

    def thaw(self) -> None:
        """SIGCONT the server and every process it started, after ``freeze()``."""
        pid = self._running_pid()
        signal_all([pid, *children(pid)], signal.SIGCONT)
        self.frozen = False

    def log_text(self) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-LOG_TAIL:]
        return "(no log)"

    def setup(self, *command: str, timeout: float = SETUP_TIMEOUT) -> None:
        """Run a one-off setup command as the server's user, in a process group of its own, so a
        command that overruns ``timeout`` is killed with everything it started."""
        with (self.base / "setup.log").open("ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **self._identity()
            )
        try:
            code: int | None = process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        if code != 0:
            text = (self.base / "setup.log").read_text(errors="replace")[-LOG_TAIL:]
            outcome = f"did not finish within {timeout} s" if code is None else f"failed ({code})"
            raise RuntimeError(f"{Path(command[0]).name} {outcome}:\n{text}")

    def give_to_server_user(self, *paths: Path) -> None:
        """Let the server's user own ``paths`` (when the tests run as root and it has one)."""
        if self.run_as is not None and os.geteuid() == 0:
            for path in paths:
                shutil.chown(path, self.run_as, self.run_as)

    # -- the plumbing -------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        """Popen arguments that run a command as ``run_as`` (root only)."""
        if self.run_as is None or os.geteuid() != 0:
            return {}
        return {"user": self.run_as, "group": self.run_as, "extra_groups": []}

    def _running_pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def _listening(self) -> bool:
        address = ("127.0.0.1", self.port)
        with contextlib.suppress(OSError), socket.create_connection(address, CONNECT_TIMEOUT):
            return True
        return False

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with {process.returncode} while starting:\n{self.log_text()}"
                )
            problem: BaseException | str = "nothing listens on the port yet"
            if self._listening():
                try:
                    self.ping()
                    return
                except self.not_ready as exc:
                    problem = exc
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} on port {self.port} did not answer within {timeout} s "
                    f"({problem}):\n{self.log_text()}"
                )
            time.sleep(PAUSE)

    def _watch(self, pid: int) -> None:
        """Start the watchdog for ``pid`` (see the module's doc)."""
        fd = lifeline()
        started = stat_fields(pid)[19]
        base = str(self.base) if self.owns_base else ""
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                _WATCHDOG,
                str(fd),
                str(pid),
                started,
                str(int(self.stop_signal)),
                str(STOP_TIMEOUT),
                base,
            ],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
        )

    def _unwatch(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
