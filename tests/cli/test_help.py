"""What a newcomer reads and relies on: --version, help that explains every flag, variable and
exit code, ``status --json`` that always answers with an object, and lock names that are never
guessed for ``release`` and ``repair``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gomaster import __version__
from gomaster.cli.commands import build_parser
from tests.helpers import wait_until
from tests.runtime.cluster import ROOT

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
COMMANDS = ("run", "status", "release", "repair", "demo")
#: A backend nobody listens on: the connection is refused at once.
UNREACHABLE = "mysql://app:secret@127.0.0.1:1/app"


def gomaster(
    *args: str, backend: str | None = None, name: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion; ``backend`` and ``name`` go in the environment if given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOMASTER_")}
    env["PYTHONPATH"] = str(ROOT)
    if backend is not None:
        env["GOMASTER_BACKEND"] = backend
    if name is not None:
        env["GOMASTER_NAME"] = name
    return subprocess.run(
        [*GOMASTER, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'locks.db'}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_prints_the_package_version() -> None:
    shown = gomaster("--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"gomaster {__version__}"


def test_top_level_help_lists_each_command_once_and_the_usage_names_a_command() -> None:
    shown = gomaster("--help")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: gomaster [-h] [--version] COMMAND ...")
    for command in COMMANDS:
        listed = [line for line in shown.stdout.splitlines() if line.split()[:1] == [command]]
        assert len(listed) == 1, f"{command!r} is listed {len(listed)} times:\n{shown.stdout}"
        usage = gomaster(command, "--help").stdout.splitlines()[0]
        assert usage.startswith(f"usage: gomaster {command} "), usage


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_of_every_command_is_explained(command: str) -> None:
    parser = _subparsers()[command]
    for action in parser._actions:
        assert action.help, f"gomaster {command} {'/'.join(action.option_strings)} has no help text"


@pytest.mark.parametrize(
    ("command", "codes"),
    [
        ("run", ["N ", "75", "126", "127", "2 "]),
        ("status", ["0 ", "3 ", "1 ", "2 ", "141"]),
        ("release", ["0 ", "1 ", "2 ", "141"]),
        ("repair", ["0 ", "1 ", "2 ", "141"]),
        ("demo", ["0 ", "1 ", "2 "]),
    ],
)
def test_help_has_a_table_of_exit_codes_one_per_line(command: str, codes: list[str]) -> None:
    shown = gomaster(command, "--help")
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("exit codes:\n", 1)[1].splitlines()
    starts = [line.strip()[:3] for line in table if line.startswith("  ") and line.strip()]
    for code in codes:
        assert any(start.startswith(code) for start in starts), f"exit code {code} not in:\n{shown.stdout}"


@pytest.mark.parametrize("command", ["run", "status", "release", "repair"])
def test_help_lists_the_environment_variables(command: str) -> None:
    shown = gomaster(command, "--help").stdout
    for variable in ("GOMASTER_BACKEND", "GOMASTER_NAME", "GOMASTER_TTL"):
        assert variable in shown, f"{variable} not in gomaster {command} --help"


def test_run_help_says_what_cmd_finds_in_its_environment() -> None:
    shown = gomaster("run", "--help").stdout
    for variable in ("GOMASTER_TOKEN", "GOMASTER_NODE_ID", "GOMASTER_NAME"):
        assert variable in shown
    assert "sqlite:////" in shown, "the example backend should be an absolute SQLite path"


@pytest.mark.parametrize("command", ["run", "status"])
def test_help_of_run_and_status_names_the_default_lock(command: str) -> None:
    assert "default 'default'" in " ".join(gomaster(command, "--help").stdout.split())


def test_a_url_without_a_scheme_is_answered_with_an_absolute_sqlite_example(backend: str) -> None:
    shown = gomaster("status", "--name", "job", backend="var/tmp/locks.db")
    assert shown.returncode == 2
    assert "sqlite:////var/tmp/locks.db" in shown.stderr, shown.stderr


def _one_object(shown: subprocess.CompletedProcess[str]) -> dict[str, object]:
    payload = json.loads(shown.stdout)
    assert isinstance(payload, dict), f"not one JSON object: {shown.stdout}"
    return payload


def test_status_json_of_an_unreachable_backend_is_one_object_with_the_error() -> None:
    shown = gomaster("status", "--name", "job", "--json", "--timeout", "2", backend=UNREACHABLE)
    assert shown.returncode == 1, shown.stderr
    answer = _one_object(shown)
    assert answer["error"] and "cannot reach the backend" in str(answer["error"])
    assert answer["has_master"] is False and answer["name"] == "job"
    assert "secret" not in shown.stdout + shown.stderr


def test_status_json_all_of_an_unreachable_backend_is_one_object_with_the_error() -> None:
    shown = gomaster("status", "--all", "--json", "--timeout", "2", backend=UNREACHABLE)
    assert shown.returncode == 1, shown.stderr
    assert _one_object(shown)["error"]


@pytest.mark.parametrize(
    "args",
    [("--backend", "nosuch://x"), ("--timeout", "nan"), ("--name", "")],
    ids=["bad-url", "bad-timeout", "empty-name"],
)
def test_status_json_of_a_usage_error_is_one_object_with_the_error(
    backend: str, args: tuple[str, ...]
) -> None:
    shown = gomaster("status", "--json", *args, backend=backend)
    assert shown.returncode == 2, shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert _one_object(shown)["error"]


def test_status_json_of_a_malformed_record_is_one_object_with_the_error(backend: str, tmp_path: Path) -> None:
    assert gomaster("status", "--name", "job", backend=backend).returncode == 3  # creates the table
    with sqlite3.connect(tmp_path / "locks.db") as raw:
        raw.execute(
            "INSERT INTO gomaster_lock (name, holder, version, token, acquired_at, renewed_at, expires_at, "
            "host, pid) VALUES ('job', 'x', '', 'garbage', 0, 0, 0, 'h', 1)"
        )
    shown = gomaster("status", "--name", "job", "--json", backend=backend)
    assert shown.returncode == 1, shown.stderr
    assert "malformed" in str(_one_object(shown)["error"])


@pytest.fixture
def default_lock_held(backend: str) -> Iterator[str]:
    """A ``gomaster run`` node given no name (so holding ``default``), elected."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOMASTER_")}
    env.update(PYTHONPATH=str(ROOT), GOMASTER_BACKEND=backend)
    node = subprocess.Popen(
        [*GOMASTER, "run", "--ttl", "2", "--", "sleep", "1000"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: gomaster("status", backend=backend).returncode == 0,
            timeout=30,
            what="the unnamed run node holding 'default'",
        )
        yield backend
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()


@pytest.mark.parametrize("command", [("release",), ("repair", "--ttl", "2")], ids=["release", "repair"])
def test_release_and_repair_act_on_no_lock_the_operator_did_not_name(
    default_lock_held: str, command: tuple[str, ...]
) -> None:
    before = _one_object(gomaster("status", "--json", backend=default_lock_held))
    assert before["name"] == "default" and before["has_master"], before
    refused = gomaster(*command, backend=default_lock_held)
    assert refused.returncode == 2, refused.stderr
    assert "--name is required" in refused.stderr and "GOMASTER_NAME" in refused.stderr
    after = _one_object(gomaster("status", "--json", backend=default_lock_held))
    assert (after["holder"], after["token"], after["has_master"]) == (before["holder"], before["token"], True)


def test_release_acts_on_the_name_in_gomaster_name(default_lock_held: str) -> None:
    released = gomaster("release", backend=default_lock_held, name="default")
    assert released.returncode == 0, released.stderr
    assert "default: released" in released.stdout


def test_an_impossible_run_timing_names_the_rule_and_the_flags_that_fix_it(backend: str) -> None:
    shown = gomaster("run", "--name", "job", "--ttl", "1", "--grace", "5", "--", "true", backend=backend)
    assert shown.returncode == 2, shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert "renew_deadline + grace < ttl * (1 - max_drift)" in shown.stderr
    assert "grace 5.0" in shown.stderr and "--grace" in shown.stderr
    assert "Timing.from_ttl" not in shown.stderr, "the command line has flags, not the Python API"
