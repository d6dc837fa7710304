"""The real ``gomaster`` command, driven as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gomaster.testing import overlaps, read_marks, tenures
from tests.runtime.cluster import ROOT, wait_gone

TTL = 2.0
GOMASTER = [sys.executable, "-m", "gomaster.cli"]
STARTUP = 15.0


class Nodes:
    """``gomaster run`` processes sharing one backend and one witness log."""

    def __init__(self, backend: str, log: Path) -> None:
        self.backend = backend
        self.log = log
        self.processes: list[subprocess.Popen[str]] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "GOMASTER_BACKEND": self.backend}

    def run(self, *options: str, cmd_args: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        command = [*GOMASTER, "run", "--name", "job", "--ttl", str(TTL), *options, "--"]
        command += [sys.executable, "-m", "tests.cli.cmd", str(self.log), *cmd_args]
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env(),
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        return process

    def gomaster(self, *args: str, backend: str | None = None) -> subprocess.CompletedProcess[str]:
        env = self.env()
        if backend is not None:
            env["GOMASTER_BACKEND"] = backend
        return subprocess.run(
            [*GOMASTER, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    def marks(self) -> list[dict[str, Any]]:
        return read_marks(self.log)

    def wait_start(self, token: int, timeout: float = STARTUP) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for mark in self.marks():
                if mark["event"] == "start" and mark["token"] == token:
                    return mark
            time.sleep(0.005)
        raise AssertionError(f"no CMD started with token {token} within {timeout} s: {self.marks()[-5:]}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for mark in self.marks():
            for key in ("pid", "child"):
                if mark["event"] in ("start", "child") and key in mark:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(mark[key]), signal.SIGKILL)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    made = Nodes(f"sqlite:///{tmp_path / 'locks.db'}", tmp_path / "witness.jsonl")
    yield made
    made.stop()


def _two(
    nodes: Nodes, *options: str, cmd_args: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    first = nodes.run(*options, cmd_args=cmd_args)
    started = nodes.wait_start(1)
    nodes.run(*options, cmd_args=cmd_args)
    time.sleep(1.5)
    return first, started


def test_of_two_run_nodes_only_one_runs_the_command(nodes: Nodes) -> None:
    _two(nodes)
    time.sleep(TTL)
    history = tenures(nodes.marks())
    assert [t.token for t in history] == [1]
    assert overlaps(history) == []


def test_a_sigkilled_master_takes_its_command_and_children_with_it_and_the_other_node_takes_over(
    nodes: Nodes,
) -> None:
    first, started = _two(nodes, cmd_args=("--child",))
    child = next(m for m in nodes.marks() if m["event"] == "child")
    killed_at = time.monotonic()
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone([started["pid"], child["child"]], timeout=1.0) <= 1.0
    second = nodes.wait_start(2, timeout=TTL + 2.0)
    assert second["node"] != started["node"]
    assert second["t"] - killed_at <= TTL + 1.0
    assert overlaps(tenures(nodes.marks())) == []


def test_release_stops_the_holders_command_and_another_node_takes_over_without_overlap(nodes: Nodes) -> None:
    _, started = _two(nodes)
    released_at = time.monotonic()
    released = nodes.gomaster("release", "--name", "job")
    assert released.returncode == 0, released.stderr
    assert f"released {started['node']}" in released.stdout
    # The holder's next renewal (within one heartbeat) fails, and its CMD is stopped at once.
    assert wait_gone([started["pid"]], timeout=TTL) <= 0.4 + 0.5
    second = nodes.wait_start(2, timeout=TTL + 2.0)
    assert second["t"] - released_at <= TTL + 1.0
    assert overlaps(tenures(nodes.marks())) == []


def test_repair_of_a_hand_corrupted_record_lets_a_master_work_again_with_a_higher_token(
    nodes: Nodes, tmp_path: Path
) -> None:
    _two(nodes)
    with sqlite3.connect(tmp_path / "locks.db") as raw:
        raw.execute("UPDATE gomaster_lock SET token = 'garbage' WHERE name = 'job'")
    broken = nodes.gomaster("status", "--name", "job")
    assert broken.returncode == 1 and "malformed" in broken.stderr
    repaired_at = time.monotonic()
    repaired = nodes.gomaster("repair", "--name", "job", "--ttl", str(TTL))
    assert repaired.returncode == 0, repaired.stderr
    assert "was lock record 'job' is malformed" in repaired.stdout
    token = int(repaired.stdout.split("released with token ")[1].split(";")[0])
    assert token > 10**12, "a garbage token must be replaced by the clock in milliseconds"
    again = nodes.wait_start(token + 1, timeout=TTL + 3.0)
    assert again["t"] - repaired_at <= TTL + 2.0
    assert overlaps(tenures(nodes.marks())) == []
    assert nodes.gomaster("status", "--name", "job").returncode == 0


def test_a_sigtermed_master_hands_over_at_once_and_exits_with_its_commands_status(nodes: Nodes) -> None:
    first, _ = _two(nodes)
    signalled = time.monotonic()
    first.send_signal(signal.SIGTERM)
    second = nodes.wait_start(2, timeout=5.0)
    assert second["t"] - signalled <= 0.4 + 0.5
    assert first.wait(10) == 128 + signal.SIGTERM


def test_once_runs_the_command_once_and_exits_with_its_status(nodes: Nodes) -> None:
    process = nodes.run("--once", cmd_args=("--exit", "7"))
    assert process.wait(30) == 7
    assert [m["event"] for m in nodes.marks()] == ["start", "stop"]
    status = nodes.gomaster("status", "--name", "job", "--json")
    assert status.returncode == 3
    assert json.loads(status.stdout)["token"] == 1


def test_once_nodes_take_turns_and_never_overlap(nodes: Nodes) -> None:
    runs = [nodes.run("--once", cmd_args=("--exit", "0")) for _ in range(3)]
    assert [r.wait(60) for r in runs] == [0, 0, 0]
    assert sorted(t.token for t in tenures(nodes.marks())) == [1, 2, 3]
    assert overlaps(tenures(nodes.marks())) == []


def test_status_exit_codes_and_json(nodes: Nodes) -> None:
    assert nodes.gomaster("status", "--name", "job").returncode == 3
    _, started = _two(nodes)
    shown = nodes.gomaster("status", "--name", "job", "--json")
    assert shown.returncode == 0, shown.stderr
    fields = json.loads(shown.stdout)
    assert fields["holder"] == started["node"]
    assert fields["token"] == 1
    assert 0 < fields["expires_in"] <= TTL
    assert fields["has_master"] is True
    listed = nodes.gomaster("status", "--all", "--json")
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["job"]
    unreachable = nodes.gomaster(
        "status", "--name", "job", "--timeout", "1", backend="sqlite:////proc/nope/x.db"
    )
    assert unreachable.returncode in (1, 2)


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--backend", "nosuch://x"),
        ("run", "--name", "job", "true"),
        ("run", "--bogus", "--", "true"),
        ("status", "--frobnicate"),
        ("repair", "--name", "job", "--ttl", "-1"),
        ("repair", "--name", "job", "--token", "-3"),
    ],
    ids=[
        "bad-url",
        "missing-dashes",
        "unknown-run-option",
        "unknown-status-option",
        "repair-ttl",
        "repair-token",
    ],
)
def test_usage_errors_are_one_line_and_exit_2(nodes: Nodes, args: tuple[str, ...]) -> None:
    result = nodes.gomaster(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_command_that_does_not_exist_is_refused_and_the_lock_is_not_kept(nodes: Nodes) -> None:
    result = nodes.gomaster("run", "--name", "job", "--", "no-such-command-here")
    assert result.returncode == 127
    assert "command not found: no-such-command-here" in result.stderr
    assert nodes.gomaster("status", "--name", "job").returncode == 3


def test_a_password_in_the_backend_url_never_shows(nodes: Nodes) -> None:
    secret = "hunter2-very-secret"
    result = nodes.gomaster(
        "status", "--name", "job", "--timeout", "1", backend=f"mysql://u:{secret}@127.0.0.1:1/db"
    )
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr
    assert "***" in result.stderr


def test_help_lists_exit_codes_and_examples(nodes: Nodes) -> None:
    shown = nodes.gomaster("run", "--help")
    assert shown.returncode == 0
    assert "exit codes" in shown.stdout and "examples" in shown.stdout


def test_a_command_that_is_not_executable_exits_126(nodes: Nodes, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    result = nodes.gomaster("run", "--name", "job", "--", str(script))
    assert result.returncode == 126
    assert "not executable" in result.stderr
