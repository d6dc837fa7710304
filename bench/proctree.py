"""A process tree read from /proc: which processes it has, their memory (PSS) and their CPU time.

A node is measured as its whole tree: the process the harness started and every process below
it, found by walking each process's parent PID. Memory is PSS (proportional set size: a page
shared by k processes counts 1/k to each), so the sum over a tree counts each page once however
many forks share it. CPU is user + system time of every process in the tree, threads included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
KIB = 1024
MIB = 1024 * 1024
#: Fields of /proc/PID/stat after the command name: ppid is the 2nd, utime and stime the 12th
#: and 13th, starttime the 20th (counting from state, the 1st).
_PPID, _UTIME, _STIME, _STARTTIME = 1, 11, 12, 19


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def _pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def tree(root: int, *, include_root: bool = True) -> list[int]:
    """``root`` and every process below it, found by parent PID; [] once ``root`` is gone."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        fields = _stat(pid)
        if fields is not None:
            children.setdefault(int(fields[_PPID]), []).append(pid)
    if _stat(root) is None:
        return []
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found if include_root else found[1:]


def identities(pids: Iterable[int]) -> set[tuple[int, int]]:
    """(pid, start time) of each process still alive: a PID the kernel reuses gets a new pair."""
    found = set()
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found.add((pid, int(fields[_STARTTIME])))
    return found


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User + system CPU seconds of each process (all its threads) that is still alive."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = (int(fields[_UTIME]) + int(fields[_STIME])) / tick
    return found


def pss_bytes(pids: Iterable[int]) -> int:
    """The sum of the processes' PSS (from /proc/PID/smaps_rollup); a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            lines = (PROC / str(pid) / "smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * KIB
                break
    return total


@dataclass(frozen=True, slots=True)
class Usage:
    """A tree over a window: its processes and PSS at the end, its CPU in % of one core."""

    processes: int
    pss_mib: float
    cpu_percent: float


class CpuWindow:
    """CPU used by some trees between ``open`` and ``close`` (a process born in between counts
    from zero; one that died in between is lost, which a steady state does not have)."""

    def __init__(self, roots: Iterable[int], *, include_root: bool = True) -> None:
        self._roots = list(roots)
        self._include_root = include_root
        self._before: dict[int, float] = {}
        self._opened = 0.0

    def pids(self) -> list[int]:
        return [pid for root in self._roots for pid in tree(root, include_root=self._include_root)]

    def open(self) -> None:
        self._before = cpu_seconds(self.pids())
        self._opened = time.monotonic()

    def close(self) -> Usage:
        pids = self.pids()
        after = cpu_seconds(pids)
        elapsed = time.monotonic() - self._opened
        used = sum(seconds - self._before.get(pid, 0.0) for pid, seconds in after.items())
        return Usage(len(pids), pss_bytes(pids) / MIB, 100.0 * used / elapsed)


def kill_all(known: set[tuple[int, int]]) -> None:
    """SIGKILL each process in ``known`` that is still the same process (same start time)."""
    for pid, _started in known & identities(pid for pid, _ in known):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
