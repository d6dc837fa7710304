"""One contender of the tooz peer benchmark: tooz leader election on Redis, same work as the demo.

    python -m bench.tooz_node --url redis://127.0.0.1:6379 --log FILE --node NAME --ttl 1 --group G

It follows tooz's documented pattern: start the coordinator with its heartbeat thread, register
``watch_elected_as_leader``, and call ``run_watchers`` every ``retry`` (the same ``ttl / 5`` that
gomaster followers poll at). Once elected, the work writes a ``start`` mark and then ``alive``
marks, like ``gomaster.cli.demo``'s work, so one harness times both. SIGTERM stops the work and then
the coordinator, which deletes the leader key: tooz's graceful handover.

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


def lock_key(group: str) -> str:
    """The Redis key tooz's driver holds for the leader of ``group`` (default namespace)."""
    return f"_tooz_leader_of_{group}_lock"


def renewal_period(ttl: float) -> float:
    """How often tooz's heart renews a lock of ``ttl`` seconds: half the time left in each beat."""
    return ttl / 2


class _Work:
    """Marks ``start`` when elected, then ``alive`` until stopped, on a thread of its own."""

    def __init__(self, log: Path, node: str) -> None:
        self._log = log
        self._node = node
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, event: object) -> None:
        append_mark(self._log, "start", node=self._node)
        self._thread = threading.Thread(target=self._alive, daemon=True)
        self._thread.start()

    def _alive(self) -> None:
        while not self._stop.wait(MARK_EVERY):
            append_mark(self._log, "alive", node=self._node)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--ttl", type=int, required=True, help="tooz takes whole seconds only")
    parser.add_argument("--group", required=True)
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
    work = _Work(args.log, args.node)
    coordinator.watch_elected_as_leader(args.group.encode(), work.start)
    while not stop.is_set():
        coordinator.run_watchers()
        stop.wait(retry)
    work.stop()
    coordinator.stop()


if __name__ == "__main__":
    main()
