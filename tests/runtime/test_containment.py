"""Nothing the master's work starts outlives its tenure, however it tries to escape.

Every entry point (``gomaster run``, ``supervise()``, ``Master``), every way a tenure ends, and
every escape kind (a child that ignores SIGTERM, one in a new session, a double-forked one; all
of them ignore SIGTERM, so only the SIGKILL at ``grace`` ends them). Each case counts the
escapee's survivors and the time it took to die, against ``grace`` plus 0.2 s after the tenure
ended (plus, where the node has to notice first, the time the guarantee gives it to notice).

The nodes run as root and as a throwaway unprivileged user: containment needs no privilege (a
child subreaper and its own ``/proc``), and the second run proves it on the path every
non-root user takes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gomaster import Timing
from tests.accounts import interpreter, make_account, need_root, python_path, remove_account
from tests.runtime.cluster import ROOT, alive
from tests.runtime.escapes import KINDS, command, escape

TIMING = Timing.from_ttl(1.0)
#: The issue's bound: every escapee dead within grace plus this after the tenure ended.
TOLERANCE = 0.2
#: How long the node may take to notice that its tenure ended, per way of ending it.
NOTICE = {
    "revoke": TIMING.heartbeat,  # the next renewal finds the lease gone
    "renew-deadline": TIMING.renew_deadline,  # counted from the last renewal sent, before the cut
    "graceful-stop": 0.0,
    "target-returns": 0.0,
    "target-killed": 0.0,
    "supervisor-killed": 0.0,
}
ENTRIES = ["run", "supervise", "master"]
STARTUP = 30.0
_POLL = 0.005
_serial = itertools.count()


#: The programs an escapee runs as (the node's own command line holds the marker too).
_ESCAPEE_PROGRAMS = frozenset({b"sh", b"sleep", b"setsid"})
#: What every escapee finally becomes (``setsid`` may fork before it execs).
_SETTLED = frozenset({b"sleep"})


def _marked(marker: str, programs: frozenset[bytes] = _ESCAPEE_PROGRAMS) -> list[int]:
    """Live escapees: shells and sleeps whose command line holds ``marker``."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read()
        except OSError:
            continue
        if needle not in argv or os.path.basename(argv.split(b"\0", 1)[0]) not in programs:
            continue
        if alive(int(entry)):
            found.append(int(entry))
    return found


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(") ", 1)[1].split()[1])


def _describe(pids: list[int]) -> str:
    """Each PID with its parent and command line, for a failure message."""
    described = []
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            described.append(f"{pid} (parent {_parent(pid)}): {cmdline}")
    return "; ".join(described)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass(frozen=True)
class User:
    """Who the nodes run as (``None`` uid: this test process's own user), and with which Python."""

    uid: int | None = None
    gid: int | None = None
    python: str = sys.executable
    python_path: str = str(ROOT)


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[User]:
    """A throwaway user, removed after the module."""
    need_root("the unprivileged containment tests")
    account = make_account("gmc")
    try:
        path = python_path()
        yield User(account.uid, account.gid, interpreter(account, path), path)
    finally:
        remove_account(account)


@pytest.fixture(params=["root", "unprivileged"])
def user(request: pytest.FixtureRequest) -> User:
    if request.param == "root":
        return User()
    found: User = request.getfixturevalue("unprivileged")
    return found


def new_marker() -> str:
    """A sleep duration no other process on the machine has in its command line."""
    return f"86400.{os.getpid()}{next(_serial):04d}"


@dataclass
class Scene:
    """One node of one entry point, its work and its escapees (``marker``), in a scratch dir."""

    entry: str
    line: str
    marker: str
    user: User
    mode: str = "forever"
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gomaster-contain-")))
    process: subprocess.Popen[bytes] | None = None
    locker: sqlite3.Connection | None = None

    def __post_init__(self) -> None:
        self.directory.chmod(0o755)
        if self.user.uid is not None:
            os.chown(self.directory, self.user.uid, self.user.gid or 0)
        self.pidfile = self.directory / "target.pid"
        self.database = self.directory / "locks.db"
        self.backend = f"sqlite:///{self.database}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": self.user.python_path, "HOME": str(self.directory)}

    def _popen(self, argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env(),
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[] if self.user.uid is not None else None,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self, escapees: int = 1) -> None:
        line = self.line
        ttl = str(TIMING.ttl)
        if self.entry == "run":
            argv = [self.user.python, "-m", "gomaster.cli", "run", "--backend", self.backend, "--name", "job"]
            argv += ["--ttl", ttl, "--", "sh", "-c", command(line, self.pidfile, self.mode)]
        else:
            argv = [self.user.python, "-m", "tests.runtime.escapes", self.entry, "--backend", self.backend]
            argv += ["--name", "job", "--ttl", ttl, "--escape", line, "--pidfile", str(self.pidfile)]
            argv += ["--mode", self.mode]
        self.process = self._popen(argv)
        deadline = time.monotonic() + STARTUP
        while not (self.pidfile.exists() and self.pidfile.read_text().strip()) or (
            len(_marked(self.marker, _SETTLED)) < escapees
        ):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the work never started its escapee: {self._stderr()}")
            time.sleep(0.01)

    def _stderr(self) -> str:
        if self.process is None or self.process.poll() is None or self.process.stderr is None:
            return "(node still running)"
        return self.process.stderr.read().decode(errors="replace")[-2000:]

    @property
    def target(self) -> int:
        return int(self.pidfile.read_text())

    @property
    def supervisor(self) -> int:
        """The supervisor: the node itself, or under ``Master`` the keeper's parent."""
        assert self.process is not None
        return self.process.pid if self.entry != "master" else _parent(_parent(self.target))

    def end_tenure(self, path: str) -> float:
        """End the tenure the way ``path`` says; when it ended (monotonic)."""
        assert self.process is not None
        match path:
            case "revoke":
                argv = [self.user.python, "-m", "gomaster.cli", "release", "--backend", self.backend]
                released = subprocess.run(
                    [*argv, "--name", "job"],
                    cwd=ROOT,
                    env=self.env(),
                    user=self.user.uid,
                    group=self.user.gid,
                    extra_groups=[] if self.user.uid is not None else None,
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                assert released.returncode == 0, released.stderr
            case "renew-deadline":
                self.locker = sqlite3.connect(self.database, timeout=10, isolation_level=None)
                self.locker.execute("BEGIN EXCLUSIVE")
            case "graceful-stop":
                os.kill(self.process.pid, signal.SIGTERM)
            case "target-returns":
                target = self.target
                while alive(target):
                    time.sleep(_POLL)
            case "target-killed":
                os.kill(self.target, signal.SIGKILL)
            case "supervisor-killed":
                os.kill(self.supervisor, signal.SIGKILL)
        return time.monotonic()

    def survivors_after(self, escapees: list[int], ended: float, bound: float) -> tuple[list[int], float]:
        """Which of ``escapees`` are still alive a good while past ``bound``, and when the last
        one died. (A node that stays in the election may start a new tenure with new escapees.)"""
        while time.monotonic() < ended + bound + 3.0:
            left = [pid for pid in escapees if pid in _marked(self.marker)]
            if not left:
                return [], time.monotonic() - ended
            time.sleep(_POLL)
        return left, time.monotonic() - ended

    def close(self) -> None:
        if self.locker is not None:
            self.locker.close()
        _kill(_marked(self.marker))
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            if self.process.stderr is not None:
                self.process.stderr.close()


@pytest.fixture
def scenes() -> Iterator[list[Scene]]:
    made: list[Scene] = []
    yield made
    for scene in made:
        scene.close()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("path", list(NOTICE))
@pytest.mark.parametrize("entry", ENTRIES)
def test_nothing_the_work_started_outlives_its_tenure(
    entry: str, path: str, kind: str, user: User, scenes: list[Scene]
) -> None:
    marker = new_marker()
    mode = "return" if path == "target-returns" else "forever"
    scene = Scene(entry, escape(kind, marker), marker, user, mode)
    scenes.append(scene)
    scene.start()
    escapees = _marked(marker)
    ended = scene.end_tenure(path)
    bound = NOTICE[path] + TIMING.grace + TOLERANCE
    survivors, took = scene.survivors_after(escapees, ended, bound)
    print(f"containment {entry} {path} {kind} uid={user.uid}: {len(survivors)} survivors, {took:.3f} s")
    assert not survivors, (
        f"{len(survivors)} {kind} escapee(s) outlived the tenure ({path}) by {took:.2f} s: "
        + _describe(survivors)
    )
    assert took <= bound, f"the {kind} escapee died {took:.3f} s after the end ({path}); bound {bound:.2f} s"


def test_a_keeper_killed_from_outside_takes_its_group_but_not_a_new_session(scenes: list[Scene]) -> None:
    """The documented edge: SIGKILL of the worker itself (not by gomaster) leaves no keeper.

    The target dies with its keeper (parent-death signal) and the supervisor kills what is left
    in the worker's process group, but a process that started its own session was adopted by
    init, out of reach: the docs say so.
    """
    marker = new_marker()
    # One work that starts all three kinds: two stay in the worker's group, one leaves it.
    line = "\n".join(escape(kind, marker) for kind in ("ignores-term", "double-fork"))
    line += "\n" + escape("new-session", marker + "1")
    scene = Scene("supervise", line, marker, User())
    scenes.append(scene)
    scene.start(escapees=3)
    escapees = _marked(marker)
    lone_one = _marked(marker + "1", _SETTLED)
    os.kill(_parent(scene.target), signal.SIGKILL)
    time.sleep(TIMING.grace + TOLERANCE)
    # The node restarts its work at once; only the first tenure's escapees count here.
    left = [pid for pid in escapees if pid in _marked(marker)]
    assert left == lone_one, f"expected only the new-session escapee {lone_one} to survive: {_describe(left)}"


def test_a_keeper_starved_of_cpu_does_not_hold_the_stop_up(scenes: list[Scene]) -> None:
    """The supervisor kills the tree below a worker whose grace ran out, without killing the
    worker (the subreaper that keeps a new-session escapee from init): a frozen worker here."""
    marker = new_marker()
    line = "\n".join(escape(kind, marker) for kind in KINDS)
    scene = Scene("supervise", line, marker, User())
    scenes.append(scene)
    scene.start(escapees=3)
    escapees = _marked(marker)
    keeper = _parent(scene.target)
    os.kill(keeper, signal.SIGSTOP)
    try:
        ended = scene.end_tenure("revoke")
        bound = NOTICE["revoke"] + TIMING.grace + TOLERANCE
        survivors, took = scene.survivors_after(escapees, ended, bound)
        left = _describe(survivors)
        assert not survivors, f"{len(survivors)} escapee(s) outlived the frozen keeper's tenure: {left}"
        assert took <= bound, f"the escapees died {took:.3f} s after the revoke; bound {bound:.2f} s"
        assert alive(keeper), "the supervisor killed the frozen keeper instead of what was below it"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(keeper, signal.SIGCONT)
