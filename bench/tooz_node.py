"""One tooz node on Redis: the peer of the failover and footprint benchmarks.

    python -m bench.tooz_node --url redis://127.0.0.1:6379 --node NAME --ttl 1 --group G [--group G2 ...]
                              [--log FILE]

It follows tooz's documented pattern: start the coordinator with its heartbeat thread, register
``watch_elected_as_leader`` for each group, and call ``run_watchers`` every ``retry`` (the same
``ttl / 5`` that gomaster followers poll at). With ``--log`` (the failover benchmark, one group),
the work writes a ``start`` mark once elected and then ``alive`` marks, like
``gomaster.cli.demo``'s work, so one harness times both. Without it (the footprint benchmark,
any number of groups), the work of each group it wins is a thread that only sleeps, and the node
says on stdout ``ready`` after its first ``run_watchers`` and ``elected GROUP`` for each group it
wins: tooz's Redis lock does not say who holds it, so the harness learns it here. SIGTERM stops
the work and then the coordinator, which deletes the leader keys: tooz's graceful handover.

What tooz promises here: the lock key expires ``lock_timeout`` whole seconds after its last
renewal (every ``lock_timeout / 2``), and a leader whose renewal fails is only logged about,
never told; its work keeps running.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import threading
from pathlib import Path
from types import FrameType

from gomaster.core.timing import Timing
from gomaster.testing import append_mark

MARK_EVERY = 0.05
#: What a node without ``--log`` says on stdout: after its first look at every group, and (with
#: the group's name after it) for each group it wins.
SAID_READY = "ready"
SAID_ELECTED = "elected "


def lock_key(group: str) -> str:
    """The Redis key tooz's driver holds for the leader of ``group`` (default namespace)."""
    return f"_tooz_leader_of_{group}_lock"


def renewal_period(ttl: float) -> float:
    """How often tooz's heart renews a lock of ``ttl`` seconds: half the time left in each beat."""
    return ttl / 2


class _Work:
    """The work of one group: once elected, marks ``start`` and then ``alive`` (with a log) or
    only sleeps (without one), on a thread of its own, until stopped."""

    def __init__(self, log: Path | None, node: str, group: str, stop: threading.Event) -> None:
        self._log = log
        self._node = node
        self.group = group
        self._stop = stop
        self._thread: threading.Thread | None = None

    def start(self, event: object) -> None:
        if self._log is not None:
            append_mark(self._log, "start", node=self._node)
        else:
            print(f"{SAID_ELECTED}{self.group}", flush=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self._log is None:
            self._stop.wait()
            return
        while not self._stop.wait(MARK_EVERY):
            append_mark(self._log, "alive", node=self._node)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--log", type=Path, help="write marks here (one group); else report on stdout")
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=int, required=True, help="tooz takes whole seconds only")
    parser.add_argument("--group", action="append", required=True, help="a group to lead (repeatable)")
    args = parser.parse_args(argv)
    # Imported by name: tooz is the bench extra's, and type checks must pass without it.
    coordination = importlib.import_module("tooz.coordination")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    retry = Timing.from_ttl(float(args.ttl)).retry
    coordinator = coordination.get_coordinator(
        args.url, args.node.encode(), lock_timeout=str(args.ttl), membership_timeout=str(args.ttl)
    )
    coordinator.start(start_heart=True)
    work = [_Work(args.log, args.node, group, stop) for group in args.group]
    for each in work:
        coordinator.watch_elected_as_leader(each.group.encode(), each.start)
    ready = args.log is not None
    while not stop.is_set():
        coordinator.run_watchers()
        if not ready:
            print(SAID_READY, flush=True)
            ready = True
        stop.wait(retry)
    for each in work:
        each.join()
    coordinator.stop()


if __name__ == "__main__":
    main()
