"""Start real gomaster nodes as subprocesses and read the witness log their work writes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gomaster import testing

ROOT = Path(__file__).resolve().parents[2]
POLL = 0.005


@dataclass
class Cluster:
    """Nodes sharing one backend and one witness log."""

    backend: str
    log: Path
    ttl: float = 2.0
    name: str = "test"
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        """Start one node; extra arguments go to tests/runtime/node.py."""
        command = [
            sys.executable,
            "-m",
            "tests.runtime.node",
            "--backend",
            self.backend,
            "--log",
            str(self.log),
        ]
        command += ["--ttl", str(self.ttl), "--name", self.name, *extra]
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True
        )
        self.nodes.append(process)
        return process

    def events(self) -> list[dict[str, Any]]:
        """Every witness line written so far (one a node is still appending is read next time)."""
        if not self.log.exists():
            return []
        text = self.log.read_text()
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line.strip()]

    def wait_for(self, what: str, condition: Callable[[list[dict[str, Any]]], Any], timeout: float) -> Any:
        """Poll the log until ``condition`` returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = condition(self.events())
            if found:
                return found
            time.sleep(POLL)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; log: {self.events()[-10:]}")

    def starts(self) -> list[dict[str, Any]]:
        """The ``start`` lines: one per tenure the work began."""
        return [e for e in self.events() if e["event"] == "start"]

    def supervisor_of(self, node: str) -> int:
        """The supervisor PID of a node, from its ``node`` line."""
        for event in self.events():
            if event["event"] == "node" and event["node"] == node:
                return int(event["supervisor"])
        raise AssertionError(f"node {node} never started")

    def stop_all(self) -> None:
        """Kill every node this cluster started, by PID, and whatever work they left."""
        for process in self.nodes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for process in self.nodes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for event in self.events():
            for key in ("pid", "child"):
                if key in event and event["event"] in ("start", "child"):
                    kill_quietly(int(event[key]))


def kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a PID this test started, ignoring one that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while we read
        return False


def children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid`` right now (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(") ", 1)[-1].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_gone(pids: list[int], timeout: float) -> float:
    """Seconds until every PID is gone; fails if some outlive ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not any(alive(pid) for pid in pids):
            return time.monotonic() - started
        time.sleep(POLL)
    raise AssertionError(f"still alive after {timeout} s: {[p for p in pids if alive(p)]}")


def overlaps(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of tokens (older, newer) whose witnessed work overlapped in time."""
    return [(o.older, o.newer) for o in testing.overlaps(testing.tenures(events))]
