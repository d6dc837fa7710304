"""Run the programs of docs/recipes as real processes, and read what their work wrote.

Every recipe writes one row per unit of master-only work to a table of an SQLite file (the
application's database), with a fenced insert: ``(token, pid, at)``. The tests read those rows
to see who worked, under which token, and when.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.runtime.cluster import ROOT

RECIPES = ROOT / "docs" / "recipes"
#: How long a test waits for a program to come up and be elected (a cold start spawns Pythons).
BOOT = 20.0


@dataclass(frozen=True, slots=True)
class Row:
    token: int
    pid: int
    at: float


@dataclass
class Programs:
    """Processes a test started, each in a session of its own, with output in files."""

    tmp: Path
    env: dict[str, str]
    started: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        out = self.tmp / f"program-{len(self.started)}.log"
        with out.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=RECIPES,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((process, out))
        return process

    def output(self) -> str:
        """Everything the programs printed, for failure messages."""
        parts = [
            f"--- pid {p.pid} (exit {p.poll()}):\n{out.read_text(errors='replace')}"
            for p, out in self.started
        ]
        return "\n".join(parts)

    def kill_all(self) -> None:
        for process, _ in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


@pytest.fixture
def programs(tmp_path: Path) -> Iterator[Programs]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GOMASTER_BACKEND": f"sqlite:///{tmp_path / 'locks.db'}",
        "APP_DB": str(tmp_path / "app.db"),
        "LEASE_TTL": "1",
    }
    made = Programs(tmp_path, env)
    try:
        yield made
    finally:
        made.kill_all()


def rows(app_db: str, table: str) -> list[Row]:
    """The rows the work wrote, in the order they were inserted."""
    if not Path(app_db).exists():
        return []
    with contextlib.closing(sqlite3.connect(app_db, timeout=10)) as db:
        try:
            found = db.execute(f"SELECT token, pid, at FROM {table} ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []
    return [Row(int(token), int(pid), float(at)) for token, pid, at in found]


def wait_for(condition: object, timeout: float, what: str, programs: Programs) -> float:
    """Poll ``condition`` every 20 ms; the ``time.monotonic()`` it held at, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{programs.output()}")
        time.sleep(0.02)
    return time.monotonic()


def assert_one_worker_at_a_time(found: list[Row]) -> None:
    """Tokens never go down, and each token's rows come from one process, in one run."""
    tokens = [row.token for row in found]
    assert tokens == sorted(tokens), f"a lower token wrote after a higher one: {tokens}"
    pids: dict[int, set[int]] = {}
    for row in found:
        pids.setdefault(row.token, set()).add(row.pid)
    assert all(len(p) == 1 for p in pids.values()), f"two processes worked under one token: {pids}"
    runs = [found[0].pid] if found else []
    for row in found[1:]:
        if row.pid != runs[-1]:
            runs.append(row.pid)
    assert len(runs) == len(set(runs)), f"the work went back and forth between processes: {runs}"
