"""A node of a test cluster: ``python -m tests.runtime.node --backend URL --log FILE ...``.

Its target is the independent witness of mastership: it appends JSON lines to ``--log`` with
the shared ``CLOCK_MONOTONIC`` (one machine, one clock): ``start`` when it begins, ``alive``
marks while it runs, and ``child`` with the PID of a subprocess it started. Tests read only this
log, never the election's own announcements.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gomaster
from gomaster import Leadership, Timing
from gomaster.testing import append_mark

MARK_INTERVAL = 0.02


def _zygote() -> int:
    """The parent of this target's worker: the zygote that forked it, recorded at the start
    because the worker is gone soon after a target that exits."""
    with open(f"/proc/{os.getppid()}/stat") as stat:
        return int(stat.read().rsplit(") ", 1)[-1].split()[1])


def make_target(log: Path, mode: str, child: bool, node: str) -> Callable[[Leadership], None]:
    """The master work, with a failure mode chosen by the test; its marks carry the lock name."""

    def work(leadership: Leadership) -> None:
        lock = leadership.name
        valid, zygote = leadership.valid(), _zygote()
        append_mark(log, "start", token=leadership.token, node=node, valid=valid, lock=lock, zygote=zygote)
        if child:
            sub = subprocess.Popen(["sleep", "1000"])
            append_mark(log, "child", token=leadership.token, node=node, child=sub.pid)
        if mode == "raise":
            time.sleep(0.2)
            raise RuntimeError("target failed on purpose")
        if mode == "exit":
            time.sleep(0.2)
            os._exit(3)
        if mode == "return":
            append_mark(log, "done", token=leadership.token, node=node)
            return
        while True:
            append_mark(log, "alive", token=leadership.token, node=node, lock=lock)
            time.sleep(MARK_INTERVAL)

    return work


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--name", default="test")
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--mode", choices=["run", "raise", "exit", "return"], default="run")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--node", default="")
    parser.add_argument("--names", default="", help="several lock names (comma-separated) in one supervisor")
    parser.add_argument("--crash", default="", help="with --names: the name whose work exits 3 at once")
    parser.add_argument("--no-spare", action="store_true", help="supervise(spare_workers=False)")
    args = parser.parse_args()
    node = args.node or str(os.getpid())
    append_mark(args.log, "node", node=node, supervisor=os.getpid())
    timing = Timing.from_ttl(args.ttl)
    if args.names:
        jobs = {
            lock: make_target(args.log, "exit" if lock == args.crash else args.mode, args.child, node)
            for lock in args.names.split(",")
        }
        gomaster.supervise(jobs, backend=args.backend, timing=timing, spare_workers=not args.no_spare)
    else:
        gomaster.supervise(
            make_target(args.log, args.mode, args.child, node),
            backend=args.backend,
            name=args.name,
            timing=timing,
            spare_workers=not args.no_spare,
        )
    append_mark(args.log, "exit", node=node)
    sys.exit(0)


if __name__ == "__main__":
    main()
