"""Timing bounds on the real command: what is out of bounds is refused up front, and what is in
bounds, up to the largest values, runs and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gomaster.core.timing import MAX_PERIOD, MAX_TTL
from tests.helpers import wait_until
from tests.runtime.cluster import ROOT

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
EXIT_USAGE = 2
EXIT_NO_MASTER = 3
#: The longest accepted timings for ``gomaster run`` (max_drift stays at its default 0.01 there,
#: so renew_deadline + grace must stay under 86400 * 0.99 = 85536).
LONGEST = {
    "--ttl": MAX_TTL,
    "--heartbeat": 42_000.0,
    "--renew-deadline": 42_500.0,
    "--retry": MAX_PERIOD,
    "--grace": 43_000.0,
}
#: A CMD that says when it started and exits 0 on SIGTERM, so the node's own status is ours.
POLITE_CMD = 'trap "exit 0" TERM; echo started > "$0"; while :; do sleep 0.05; done'


def gomaster(*args: str, backend: str) -> subprocess.CompletedProcess[str]:
    """Run the command to completion, capturing its output as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GOMASTER_BACKEND": backend}
    return subprocess.run(
        [*GOMASTER, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'locks.db'}"


@pytest.mark.parametrize(
    ("flags", "rule"),
    [
        (("--ttl", "1e12"), "ttl must be from 0.1 to 86400 seconds"),
        (("--ttl", "1e300"), "ttl must be from 0.1 to 86400 seconds"),
        (("--ttl", "86400.01"), "ttl must be from 0.1 to 86400 seconds"),
        (("--ttl", "1e-9"), "ttl must be from 0.1 to 86400 seconds"),
        (("--ttl", "0.099"), "ttl must be from 0.1 to 86400 seconds"),
        (("--ttl", "nan"), "ttl must be a finite number of seconds"),
        (("--ttl=-inf",), "ttl must be a finite number of seconds"),
        (("--ttl", "-5"), "ttl must be from 0.1 to 86400 seconds"),
        (("--retry", "1e12"), "retry must be from 0.01 to 86400 seconds"),
        (("--heartbeat", "0.001"), "heartbeat must be from 0.01 to 86400 seconds"),
        (("--ttl", "0.1", "--grace", "0.009"), "grace must be from 0.01 to 86400 seconds"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_run_refuses_a_timing_out_of_bounds_naming_the_rule(
    backend: str, flags: tuple[str, ...], rule: str
) -> None:
    result = gomaster("run", "--name", "job", *flags, "--", "true", backend=backend)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert rule in result.stderr


@pytest.mark.parametrize("ttl", ["1e300", "0", "0.05", "nan"])
def test_repair_refuses_a_ttl_out_of_bounds(backend: str, ttl: str) -> None:
    result = gomaster("repair", "--name", "job", "--ttl", ttl, backend=backend)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "--ttl must be" in result.stderr


def test_demo_refuses_a_ttl_out_of_bounds() -> None:
    result = gomaster("demo", "--ttl", "1e300", "--duration", "1", backend="memory://")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "ttl must be from 0.1 to 86400 seconds" in result.stderr


def test_a_node_on_the_longest_timings_is_elected_stops_on_sigterm_exits_0_and_releases(
    backend: str, tmp_path: Path
) -> None:
    started = tmp_path / "started"
    flags = [item for flag, value in LONGEST.items() for item in (flag, repr(value))]
    command = [*GOMASTER, "run", "--name", "job", *flags, "--", "sh", "-c", POLITE_CMD, str(started)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GOMASTER_BACKEND": backend}
    node = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(started.exists, what="CMD started on the elected node")
        shown = json.loads(gomaster("status", "--name", "job", "--json", backend=backend).stdout)
        assert shown["has_master"] and shown["expires_in"] > MAX_TTL - 60
        stopped_at = time.monotonic()
        node.send_signal(signal.SIGTERM)
        _, errors = node.communicate(timeout=30)
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait()
    assert node.returncode == 0, errors
    assert "Traceback" not in errors and "OverflowError" not in errors, errors
    assert time.monotonic() - stopped_at < 10, "the stop waited on a long timing"
    after = gomaster("status", "--name", "job", "--json", backend=backend)
    assert after.returncode == EXIT_NO_MASTER
    released = json.loads(after.stdout)
    assert (released["holder"], released["token"], released["expires_in"]) == ("", 1, 0.0)
