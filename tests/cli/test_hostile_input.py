"""Hostile input to the real ``gomaster`` command: one clear line saying what to fix, never a
traceback, and nothing from the backend that can steer the terminal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gomaster.backends import connect
from gomaster.core.decide import plan_acquire
from gomaster.core.record import LockRecord, NodeIdentity
from gomaster.core.timing import Timing
from tests.helpers import ok
from tests.runtime.cluster import ROOT

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
EXIT_USAGE = 2
EXIT_UNREACHABLE = 1
EXIT_BROKEN_PIPE = 141
TIMEOUT = 5.0
#: A host, version and holder as someone with write access to the lock table might leave them:
#: clear the screen, retitle the window, colour the rest red, reverse the text direction.
EVIL_HOST = "web-1\x1b[2J\x1b[H"
EVIL_VERSION = "1.0\x1b]0;owned\x07\u202e"
EVIL_HOLDER = "node\x1b[31m"


def gomaster(
    *args: str, backend: str, env: dict[str, str] | None = None, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion with ``backend``; stderr (and stdout, unless given) as text."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "GOMASTER_BACKEND": backend, **(env or {})}
    return subprocess.run(
        [*GOMASTER, *args],
        check=False,
        cwd=ROOT,
        env=environment,
        text=True,
        timeout=60,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """Exit 2 with exactly one line on stderr that contains every phrase, and no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_USAGE, f"exit {result.returncode}: {result.stderr}"
    assert len(lines) == 1, f"not one line: {result.stderr}"
    for phrase in phrases:
        assert phrase in lines[0], f"{lines[0]!r} does not say {phrase!r}"


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'locks.db'}"


def hold(url: str, name: str, me: NodeIdentity) -> LockRecord:
    """Make ``me`` the holder of ``name``, the way any node would."""
    store = connect(url)
    seen = ok(store.observe(name, TIMEOUT))
    record = ok(store.claim(plan_acquire(seen, name, me, Timing()).unwrap(), TIMEOUT))
    store.close()
    return record


@pytest.mark.parametrize(
    "command",
    [("status",), ("release",), ("repair",), ("run", "--", "true")],
    ids=["status", "release", "repair", "run"],
)
def test_a_lock_name_that_is_not_utf8_is_a_usage_error_for_every_command(
    backend: str, command: tuple[str, ...]
) -> None:
    # Python turns the argv byte 0x80 into the lone surrogate '\udc80', and back on the way out.
    verb, *rest = command
    result = gomaster(verb, "--name", "job-\udc80", *rest, backend=backend)
    assert_one_line_usage_error(result, "lock name", "lone surrogate")


def test_status_escapes_what_the_backend_holds_and_json_keeps_it_exact(backend: str) -> None:
    me = NodeIdentity(node_id=EVIL_HOLDER, host=EVIL_HOST, pid=7, version=EVIL_VERSION)
    hold(backend, "job", me)
    shown = gomaster("status", "--name", "job", backend=backend)
    assert shown.returncode == 0, shown.stderr
    assert not any(char in shown.stdout for char in "\x1b\x07\u202e"), f"raw control text: {shown.stdout!r}"
    assert "master node\\x1b[31m" in shown.stdout
    assert "web-1\\x1b[2J\\x1b[H (pid 7)" in shown.stdout
    assert "1.0\\x1b]0;owned\\x07\\u202e" in shown.stdout
    listed = gomaster("status", "--all", backend=backend)
    assert "\x1b" not in listed.stdout and "web-1\\x1b[2J" in listed.stdout
    exact = json.loads(gomaster("status", "--name", "job", "--json", backend=backend).stdout)
    assert (exact["holder"], exact["host"], exact["version"]) == (EVIL_HOLDER, EVIL_HOST, EVIL_VERSION)


def test_release_escapes_the_holder_it_reports(backend: str) -> None:
    hold(backend, "job", NodeIdentity(node_id=EVIL_HOLDER, host=EVIL_HOST, pid=7))
    released = gomaster("release", "--name", "job", backend=backend)
    assert released.returncode == 0, released.stderr
    assert "\x1b" not in released.stdout
    assert "released node\\x1b[31m (host web-1\\x1b[2J\\x1b[H, pid 7, token 1)" in released.stdout


@pytest.mark.parametrize("version", ["1.0\x1b[2J", "1.0\n2.0", "1.0\x9b31m", "1.0\udc80"])
def test_an_app_version_with_control_characters_is_refused_before_joining(backend: str, version: str) -> None:
    result = gomaster("run", "--name", "job", "--app-version", version, "--", "true", backend=backend)
    assert_one_line_usage_error(result, "--app-version", "version must")
    assert "\x1b" not in result.stderr
    assert not Path(backend.removeprefix("sqlite:///")).exists(), "the node joined the election anyway"


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "1e300"])
def test_a_status_timeout_that_is_not_a_usable_number_of_seconds_is_a_usage_error(
    backend: str, timeout: str
) -> None:
    result = gomaster("status", "--name", "job", "--timeout", timeout, backend=backend)
    assert_one_line_usage_error(result, "--timeout must be")


def test_a_timeout_from_the_environment_is_checked_too(backend: str) -> None:
    result = gomaster("release", "--name", "job", backend=backend, env={"GOMASTER_TIMEOUT": "nan"})
    assert_one_line_usage_error(result, "--timeout must be a finite number of seconds")


@pytest.mark.parametrize(
    ("args", "unbuffered"),
    [
        (("status", "--name", "job"), ""),
        (("status", "--name", "job"), "1"),
        (("status", "--all"), ""),
        (("--help",), ""),
    ],
    ids=["status-buffered", "status-unbuffered", "all", "help"],
)
def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(
    backend: str, args: tuple[str, ...], unbuffered: str
) -> None:
    """Buffered, the write fails at the final flush; unbuffered, at the first print."""
    hold(backend, "job", NodeIdentity(node_id="a", host="h", pid=1))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before gomaster writes a byte, as after `| head -0`
    try:
        result = gomaster(*args, backend=backend, stdout=write_end, env={"PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write_end)
    assert result.stderr == "", f"not quiet: {result.stderr}"
    assert result.returncode == EXIT_BROKEN_PIPE


@pytest.mark.parametrize("port", ["99999", "65536", "0"])
def test_a_port_out_of_range_is_a_usage_error_naming_the_range(port: str) -> None:
    result = gomaster("status", "--name", "job", backend=f"mysql://app:secret@db:{port}/app")
    assert_one_line_usage_error(result, "port must be a number from 1 to 65535")
    assert "not a number" not in result.stderr and "secret" not in result.stderr


def test_release_of_a_malformed_record_says_so_and_points_at_repair(backend: str, tmp_path: Path) -> None:
    hold(backend, "job", NodeIdentity(node_id="a", host="h", pid=1))
    with sqlite3.connect(tmp_path / "locks.db") as raw:
        raw.execute("UPDATE gomaster_lock SET token = 'garbage' WHERE name = 'job'")
    result = gomaster("release", "--name", "job", backend=backend)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_UNREACHABLE
    assert len(lines) == 1, result.stderr
    assert "cannot reach" not in lines[0]
    assert "lock record 'job' is malformed" in lines[0]
    assert "gomaster repair --name job" in lines[0]
