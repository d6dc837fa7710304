"""Attacks on the SQLite backend's files and URLs, each one carried out for real.

The victim and the other local user are throwaway accounts made for this session (the tests run
as root, as CI does); each side runs as its user through ``runuser`` (see ``sqlite_actor``), with
a sticky world-writable directory of the session standing in for ``/tmp``.
"""

from __future__ import annotations

import json
import os
import pickle
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from returns.result import Failure

from gomaster.backends import connect, parse_backend
from gomaster.backends.sqlite import SQLiteBackend
from gomaster.core.errors import BackendError
from tests.accounts import (
    SEARCH_PATH,
    Account,
    interpreter,
    make_account,
    need_root,
    python_path,
    remove_account,
)
from tests.helpers import err, ok

ACTOR = "tests.backends.sqlite_actor"
TIMEOUT = 5.0
#: How long one command run as another user may take (``gomaster run`` spawns processes).
RUN_TIMEOUT = 90.0
HOUR = "3600"
DEFAULT_SUBDIR = (".local", "state", "gomaster")


@dataclass(frozen=True)
class Users:
    """The victim, another user (whose group the victim is in, to share files on purpose), the
    interpreter both can run, and the shared temp directory."""

    victim: Account
    other: Account
    python: str
    python_path: str
    tmpdir: Path

    @property
    def default_path(self) -> Path:
        return self.victim.home.joinpath(*DEFAULT_SUBDIR, "locks.db")

    @property
    def old_path(self) -> Path:
        """The earlier versions' default file for the victim, under the victim's ``$TMPDIR``."""
        return self.tmpdir / f"gomaster-{self.victim.uid}.db"

    def command(
        self, who: Account, *argv: str, umask: int | None = None, env: dict[str, str] | None = None
    ) -> list[str]:
        settings = {
            "PATH": SEARCH_PATH,
            "HOME": str(who.home),
            "USER": who.name,
            "LOGNAME": who.name,
            "TMPDIR": str(self.tmpdir),
            "PYTHONPATH": self.python_path,
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            **(env or {}),
        }
        inner = list(argv)
        if umask is not None:
            inner = ["/bin/sh", "-c", f'umask {umask:03o} && exec "$@"', "sh", *inner]
        assignments = [f"{key}={value}" for key, value in settings.items()]
        return ["runuser", "-u", who.name, "--", "env", "-i", *assignments, *inner]

    def run(
        self, who: Account, *argv: str, umask: int | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = self.command(who, *argv, umask=umask, env=env)
        return subprocess.run(
            command, check=False, cwd=who.home, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )

    def gomaster(self, who: Account, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(who, self.python, "-m", "gomaster.cli", *args)

    def act(
        self, who: Account, *args: str, umask: int | None = None, env: dict[str, str] | None = None
    ) -> dict[str, object]:
        """Run one ``sqlite_actor`` action as ``who`` and return what it printed."""
        done = self.run(who, self.python, "-m", ACTOR, *args, umask=umask, env=env)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 0 and lines, f"{args} as {who.name} failed:\n{done.stderr}"
        answer: dict[str, object] = json.loads(lines[-1])
        return answer

    def start(self, who: Account, *args: str) -> subprocess.Popen[str]:
        """Start a ``sqlite_actor`` action as ``who`` that keeps going until its stdin closes."""
        return subprocess.Popen(
            self.command(who, self.python, "-m", ACTOR, *args),
            cwd=who.home,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def make_default_dir(self) -> Path:
        """The victim's default directory, made by the victim as any earlier run would have."""
        directory = self.default_path.parent
        made = self.run(self.victim, "mkdir", "-p", "-m", "700", str(directory))
        assert made.returncode == 0, made.stderr
        return directory


def _reply(process: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> dict[str, object]:
    """The next JSON line ``process`` prints, failing with its stderr if none comes in time."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = process.stdout.readline()
            if line:
                answer: dict[str, object] = json.loads(line)
                return answer
    process.kill()
    _, stderr = process.communicate()
    raise AssertionError(f"no answer from pid {process.pid}:\n{stderr}")


def _finish(process: subprocess.Popen[str]) -> None:
    try:
        process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


@pytest.fixture(scope="session")
def accounts() -> Iterator[Users]:
    need_root("the SQLite file attacks")
    made: list[Account] = []
    tmpdir = Path(tempfile.mkdtemp(prefix="gomaster-security-"))
    try:
        os.chmod(tmpdir, 0o1777)
        other = make_account("gmo")
        made.append(other)
        victim = make_account("gmv", other.name)
        made.append(victim)
        path = python_path()
        yield Users(victim, other, interpreter(victim, path), path, tmpdir)
    finally:
        for account in made:
            remove_account(account)
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.fixture
def users(accounts: Users) -> Users:
    """The session's users, with the victim's state and the shared temp directory emptied."""
    shutil.rmtree(accounts.victim.home / ".local", ignore_errors=True)
    for entry in accounts.tmpdir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return accounts


# -- the default file: where it is and who may touch it ----------------------------------------


def test_the_default_file_is_derived_from_the_user_database_not_the_environment(users: Users) -> None:
    elsewhere = str(users.tmpdir / "elsewhere")
    env = {"HOME": elsewhere, "XDG_STATE_HOME": elsewhere, "XDG_RUNTIME_DIR": elsewhere, "TMPDIR": elsewhere}
    plain = users.act(users.victim, "default")
    moved = users.act(users.victim, "default", env=env)
    assert plain == moved == {"ok": True, "path": str(users.default_path)}


def test_the_default_files_are_private_whatever_the_umask(users: Users) -> None:
    claimed = users.act(users.victim, "claim", "jobs", umask=0o000)
    assert claimed["ok"], claimed
    assert claimed["path"] == str(users.default_path)
    # Listed by the victim while its connection was open, so the WAL and shared-memory files exist.
    assert claimed["modes"] == {
        ".": "0700",
        "locks.db": "0600",
        "locks.db-shm": "0600",
        "locks.db-wal": "0600",
    }
    for depth in (1, 2):
        made = users.victim.home.joinpath(*DEFAULT_SUBDIR[:depth])
        assert oct(os.stat(made).st_mode & 0o777) == oct(0o700), made


def test_another_user_cannot_lock_the_default_file_to_demote_the_master(users: Users) -> None:
    victim = users.start(users.victim, "claim", "jobs", "--hold")
    other: subprocess.Popen[str] | None = None
    try:
        claimed = _reply(victim)
        assert claimed["ok"], claimed
        other = users.start(users.other, "lock-shm", f"{claimed['path']}-shm")
        locked = _reply(other)
        assert victim.stdin is not None
        victim.stdin.write("renew\n")
        victim.stdin.flush()
        renewed = _reply(victim)
    finally:
        for process in (victim, other):
            if process is not None:
                _finish(process)
    assert not locked["ok"] and "PermissionError" in str(locked["error"]), locked
    assert renewed["ok"], renewed


def test_another_users_file_at_the_default_path_is_refused_naming_path_and_owner(users: Users) -> None:
    planted = users.other.home / "planted.db"
    held = users.act(users.other, "hold", f"sqlite:///{planted}", "jobs", "1e9")
    assert held["ok"], held
    users.make_default_dir()
    os.replace(planted, users.default_path)
    claimed = users.act(users.victim, "claim", "jobs")
    assert not claimed["ok"], claimed
    error = str(claimed["error"])
    assert str(users.default_path) in error
    assert f"owned by {users.other.name} (uid {users.other.uid})" in error
    assert "remove it" in error


def test_another_users_file_at_the_old_temp_path_cannot_keep_the_victim_from_mastership(users: Users) -> None:
    held = users.act(users.other, "hold", f"sqlite:///{users.old_path}", "jobs", "1e9")
    assert held["ok"], held
    claimed = users.act(users.victim, "claim", "jobs")
    assert claimed["ok"], claimed
    assert claimed["path"] == str(users.default_path)


def test_a_symlink_planted_at_the_default_file_is_refused_and_not_written_through(users: Users) -> None:
    bait = users.tmpdir / "bait.db"
    users.make_default_dir()
    os.symlink(bait, users.default_path)
    os.lchown(users.default_path, users.other.uid, users.other.gid)
    claimed = users.act(users.victim, "claim", "jobs")
    assert not claimed["ok"], claimed
    assert str(users.default_path) in str(claimed["error"]) and "symbolic link" in str(claimed["error"])
    assert not bait.exists()


def test_a_symlink_planted_at_the_default_directory_is_refused_and_not_written_through(users: Users) -> None:
    trap = users.tmpdir / "trap"
    made = users.run(users.other, "mkdir", "-m", "777", str(trap))
    assert made.returncode == 0, made.stderr
    directory = users.make_default_dir()
    directory.rmdir()
    os.symlink(trap, directory)
    os.lchown(directory, users.other.uid, users.other.gid)
    claimed = users.act(users.victim, "claim", "jobs")
    assert not claimed["ok"], claimed
    assert str(directory) in str(claimed["error"]) and "symbolic link" in str(claimed["error"])
    assert list(trap.iterdir()) == []


@pytest.mark.parametrize("level", [0, 1], ids=["gomaster-dir", "state-dir"])
def test_a_default_directory_writable_by_others_is_refused(users: Users, level: int) -> None:
    directory = users.make_default_dir()
    loose = directory.parents[level - 1] if level else directory
    os.chmod(loose, 0o777)
    claimed = users.act(users.victim, "claim", "jobs")
    assert not claimed["ok"], claimed
    error = str(claimed["error"])
    assert f"directory {loose} is writable by group or others (mode 0777)" in error
    assert f"chmod go-w {loose}" in error


# -- the earlier default file during a rolling upgrade -----------------------------------------


@pytest.mark.parametrize("old_node", ["stopped", "running"])
def test_a_live_lease_in_the_old_default_file_holds_the_claim_back_and_says_why(
    users: Users, old_node: str
) -> None:
    url = f"sqlite:///{users.old_path}"
    holder: subprocess.Popen[str] | None = None
    try:
        if old_node == "running":
            holder = users.start(users.victim, "hold", url, "jobs", HOUR, "--wait")
            assert _reply(holder)["ok"]
        else:
            assert users.act(users.victim, "hold", url, "jobs", HOUR)["ok"]
        # A stopped node left a complete file; a running one keeps a WAL that must be read too.
        assert Path(f"{users.old_path}-wal").exists() == (old_node == "running")
        claimed = users.act(users.victim, "claim", "jobs")
        unrelated = users.act(users.victim, "claim", "reports")
    finally:
        if holder is not None:
            _finish(holder)
    assert not claimed["ok"], claimed
    error = str(claimed["error"])
    assert f"the old default SQLite file {users.old_path} still holds a live lease" in error
    assert "rolling upgrade" in error and "stop those nodes" in error
    assert f"GOMASTER_BACKEND=sqlite:///{users.old_path}" in error
    assert unrelated["ok"], unrelated


@pytest.mark.parametrize("ended", ["released", "expired"])
def test_a_released_or_expired_lease_in_the_old_default_file_lets_the_claim_proceed(
    users: Users, ended: str
) -> None:
    url = f"sqlite:///{users.old_path}"
    if ended == "released":
        assert users.act(users.victim, "hold", url, "jobs", HOUR, "--release")["ok"]
    else:
        assert users.act(users.victim, "hold", url, "jobs", "0.2")["ok"]
        time.sleep(0.5)
    claimed = users.act(users.victim, "claim", "jobs")
    assert claimed["ok"], claimed
    assert claimed["path"] == str(users.default_path)


# -- the command line --------------------------------------------------------------------------


def test_status_names_the_default_file_it_read(users: Users) -> None:
    shown = users.gomaster(users.victim, "status", "--name", "jobs")
    assert shown.returncode == 3, shown.stderr
    assert f"backend sqlite:///{users.default_path} (the default" in shown.stdout
    as_json = users.gomaster(users.victim, "status", "--name", "jobs", "--json")
    assert json.loads(as_json.stdout)["backend"] == f"sqlite:///{users.default_path}"


def test_an_unsafe_default_is_a_one_line_usage_error(users: Users) -> None:
    directory = users.make_default_dir()
    os.chmod(directory, 0o777)
    shown = users.gomaster(users.victim, "status", "--name", "jobs")
    assert shown.returncode == 2, shown.stderr
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith("gomaster: error: ")
    assert f"directory {directory} is writable by group or others" in shown.stderr


def test_run_announces_the_new_default_file_and_proceeds_past_a_released_old_lease(users: Users) -> None:
    assert users.act(users.victim, "hold", f"sqlite:///{users.old_path}", "jobs", HOUR, "--release")["ok"]
    ran = users.gomaster(users.victim, "run", "--name", "jobs", "--once", "--ttl", "1", "--", "true")
    assert ran.returncode == 0, ran.stderr
    assert f"using SQLite file {users.default_path}, which only this user's processes" in ran.stderr


# -- explicit paths ----------------------------------------------------------------------------


def test_an_explicit_file_shared_with_another_user_on_purpose_keeps_working(users: Users) -> None:
    team = users.tmpdir / "team"
    team.mkdir()
    os.chown(team, 0, users.other.gid)
    os.chmod(team, 0o2770)  # setgid: every file made in it belongs to the sharing group
    url = f"sqlite:///{team / 'locks.db'}"
    assert users.act(users.other, "hold", url, "jobs", HOUR, "--release", umask=0o002)["ok"]
    claimed = users.act(users.victim, "hold", url, "jobs", HOUR, umask=0o002)
    assert claimed == {"ok": True, "token": 2}
    status = os.stat(team / "locks.db")
    assert status.st_uid == users.other.uid and oct(status.st_mode & 0o777) == oct(0o660)


def test_a_symlink_at_an_explicit_path_is_refused_naming_its_target(tmp_path: Path) -> None:
    target, link = tmp_path / "real.db", tmp_path / "link.db"
    link.symlink_to(target)
    outcome = parse_backend(f"sqlite:///{link}")
    assert isinstance(outcome, Failure)
    assert f"SQLite file {link} is a symbolic link" in outcome.failure()
    assert str(target) in outcome.failure()


def test_a_symlink_planted_beside_an_explicit_file_is_refused_and_not_written_through(tmp_path: Path) -> None:
    database, precious = tmp_path / "locks.db", tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    backend = connect(f"sqlite:///{database}")
    Path(f"{database}-wal").symlink_to(precious)
    failure = err(backend.observe("jobs", TIMEOUT))
    backend.close()
    assert isinstance(failure, BackendError)
    assert f"SQLite file {database}-wal is a symbolic link" in failure.message
    assert precious.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("umask", "mode"),
    [(0o002, 0o660), (0o022, 0o600), (0o077, 0o600), (0o000, 0o660)],
    ids=["umask-002", "umask-022", "umask-077", "umask-000"],
)
def test_a_new_explicit_file_gives_others_nothing_and_the_group_all_or_nothing(
    tmp_path: Path, umask: int, mode: int
) -> None:
    database = tmp_path / "locks.db"
    before = os.umask(umask)
    try:
        backend = connect(f"sqlite:///{database}")
        ok(backend.observe("jobs", TIMEOUT))
        modes = {suffix: os.stat(f"{database}{suffix}").st_mode & 0o777 for suffix in ("", "-wal", "-shm")}
    finally:
        os.umask(before)
        backend.close()
    assert modes == {"": mode, "-wal": mode, "-shm": mode}


# -- URLs and the lock table -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite:///file::memory:?cache=shared",
        "sqlite:///file:locks?mode=memory&cache=shared",
        "sqlite:///locks.db?mode=memory",
        "sqlite:///locks.db?vfs=memdb",
    ],
)
def test_an_in_memory_database_is_refused_saying_what_to_use(url: str) -> None:
    outcome = parse_backend(url)
    assert isinstance(outcome, Failure)
    message = outcome.failure()
    assert "every" in message and "process would hold its own lock" in message
    assert "memory://" in message and "sqlite:////" in message and "\n" not in message
    with pytest.raises(ValueError, match="in-memory"):
        connect(url)


def test_a_sqlite_file_uri_is_refused_for_a_plain_path(tmp_path: Path) -> None:
    outcome = parse_backend(f"sqlite:///file:{tmp_path / 'locks.db'}")
    assert isinstance(outcome, Failure)
    assert "plain file path" in outcome.failure()


def test_an_unknown_option_is_refused_naming_it_and_the_known_ones(tmp_path: Path) -> None:
    outcome = parse_backend(f"sqlite:///{tmp_path / 'locks.db'}?tabel=x")
    assert isinstance(outcome, Failure)
    assert outcome.failure() == "unknown SQLite option 'tabel'; known options: table"


def test_the_default_files_rules_survive_the_trip_to_a_worker_process() -> None:
    path = "/home/someone/.local/state/gomaster/locks.db"
    backend = SQLiteBackend(path, private=True, supersedes="/tmp/gomaster-1000.db")
    copy = pickle.loads(pickle.dumps(backend))
    assert copy.private
    assert copy.__getstate__() == backend.__getstate__()
    with pytest.raises(ValueError, match="private=True is for the default file"):
        SQLiteBackend("/srv/locks.db", private=True)
