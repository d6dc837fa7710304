"""Throwaway local users for tests that must run something without root's privileges.

The tests run as root (as CI does); a test that proves something for an ordinary user makes one
here, runs its processes as that user, and removes it after.
"""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

#: The checkout the tests run from: other users import gomaster from here.
REPO = Path(__file__).resolve().parents[1]
#: PATH for processes run as another user.
SEARCH_PATH = "/usr/local/bin:/usr/bin:/bin"
#: How long one probe run as another user may take.
PROBE_TIMEOUT = 90.0


@dataclass(frozen=True)
class Account:
    """A throwaway local user."""

    name: str
    uid: int
    gid: int
    home: Path


def need_root(what: str) -> None:
    """Fail in CI (which runs as root), skip elsewhere, when this process cannot make users."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} need root to create throwaway users, and CI runs as root")
    pytest.skip(f"{what} need root to create throwaway users")


def make_account(prefix: str, *groups: str) -> Account:
    """A new user with its own group and home directory, in ``groups`` too."""
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    extra = ["--groups", ",".join(groups)] if groups else []
    subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", *extra, name],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


def remove_account(account: Account) -> None:
    """Delete the user and its home directory."""
    subprocess.run(["userdel", "--remove", account.name], check=False, capture_output=True)
    shutil.rmtree(account.home, ignore_errors=True)


def python_path() -> str:
    """PYTHONPATH that gives another user's interpreter gomaster and everything it needs."""
    return os.pathsep.join([str(REPO), *site.getsitepackages()])


def interpreter(account: Account, path: str) -> str:
    """A Python of this version that ``account`` may run: this one, or the system's when this
    one lives where other users cannot reach (a virtualenv made from a pyenv under /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable), getattr(sys, "_base_executable", "")]
    candidates += [shutil.which(f"python{version}", path=SEARCH_PATH) or ""]
    probe = "import sys, gomaster.backends.sqlite, returns, multiprocess; "
    probe += f"assert sys.version.startswith('{version}.')"
    tried = []
    for python in dict.fromkeys(c for c in candidates if c):
        command = ["runuser", "-u", account.name, "--", "env", "-i", f"PATH={SEARCH_PATH}"]
        command += [f"PYTHONPATH={path}", python, "-c", probe]
        done = subprocess.run(
            command, check=False, cwd="/", capture_output=True, text=True, timeout=PROBE_TIMEOUT
        )
        if done.returncode == 0:
            return python
        tried.append(f"{python}: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    raise AssertionError(f"no Python {version} that user {account.name} can run with gomaster: {tried}")
