"""Nothing gomaster opens takes fd 0, 1 or 2, and CMD gets /dev/null for a closed stream.

A node started with a standard stream closed (``>&-``, ``2>&-``, a service manager that gives
none) used to hand that number to the next file it opened: the lease's shared memory landed on
CMD's stdout, and CMD's first ``printf`` wrote over the lease.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.cluster import ROOT

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
#: CMD that records where each of its descriptors points.
REPORT_FDS = """
import json, os, sys
links = {}
for name in os.listdir("/proc/self/fd"):
    try:
        links[name] = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        pass  # the descriptor listdir itself used, closed by now
json.dump(links, open(sys.argv[1], "w"))
"""


def _run_closed(closing: str, tmp_path: Path, *cmd: str) -> subprocess.CompletedProcess[bytes]:
    """``gomaster run --once -- CMD`` started with the shell redirection ``closing`` (``>&-``)."""
    backend = f"sqlite:///{tmp_path / 'locks.db'}"
    argv = [*GOMASTER, "run", "--backend", backend, "--name", "fds", "--once", "--ttl", "1", "--", *cmd]
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {closing}', "sh", *argv],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("closing", "closed"), [(">&-", {1}), ("2>&-", {2}), ("<&-", {0}), ("<&- >&- 2>&-", {0, 1, 2})]
)
def test_cmd_gets_dev_null_for_a_closed_stream_and_nothing_of_gomaster(
    closing: str, closed: set[int], tmp_path: Path
) -> None:
    report = tmp_path / "fds.json"
    done = _run_closed(closing, tmp_path, sys.executable, "-c", REPORT_FDS, str(report))
    assert done.returncode == 0, done.stderr.decode()
    fds = {int(fd): target for fd, target in json.loads(report.read_text()).items()}
    assert set(fds) == {0, 1, 2}, f"CMD inherited more than its standard streams: {fds}"
    for fd in closed:
        assert fds[fd] == "/dev/null", f"fd {fd} was closed in the parent but CMD has {fds[fd]}"


def test_cmd_writing_to_a_closed_stdout_does_not_touch_the_lease(tmp_path: Path) -> None:
    done = _run_closed(">&-", tmp_path, "sh", "-c", "sleep 0.5; printf AAAAAAAAAAAAAAAA; sleep 1.5")
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.decode()}"


@pytest.mark.parametrize("status", [0, 3])
def test_run_once_with_stderr_closed_exits_with_cmds_status(status: int, tmp_path: Path) -> None:
    done = _run_closed("2>&-", tmp_path, "sh", "-c", f"exit {status}")
    assert done.returncode == status
