"""Failover and handover times on a real backend, from the work's own first action.

    python -m bench.failover --backend URL [--ttl 2] [--rounds 20] [--mode crash|graceful]
                             [--peer tooz] [--json FILE]

Three nodes contend; each round stops the current master (SIGKILL for ``crash``, SIGTERM for
``graceful``) at a random moment of its renewal cycle and times how long until the next
master's work writes its first mark. Nodes are ``gomaster.cli.demo`` processes, or with
``--peer tooz`` the tooz contenders of ``bench.tooz_node`` (Redis URLs only), timed the same way.

For crashes each round also reads the dead master's lease expiry from the backend (the record's
``expires_at``, or for tooz the key's remaining PTTL against Redis's TIME), 0.1 s after the kill
so that a renewal still in flight at the kill is counted, which gives
  - the floor: expiry - kill, the least time any successor could take, and
  - expiry -> work: from that expiry to the successor's first mark (wall clocks of one machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TypeAlias

from bench.marks import MarkTail
from bench.tooz_node import lock_key, renewal_period
from gomaster.backends import connect
from gomaster.core.timing import Timing
from gomaster.runtime._io import performed

NODES = 3
#: Before each stop every node must be ready (``ready``); then the harness waits this long plus
#: a random part of the renewal cycle.
SETTLE = 0.5
#: A gomaster node starts its elector thread (beside its main thread) only once its warm workers
#: have booted; a tooz node runs its main thread and its heart.
WARM_THREADS = 2
READY_TIMEOUT = 60.0
READY_POLL = 0.02
#: Waiting for a new master gives up after ``ttl * START_TTLS + START_SLACK`` seconds.
START_TTLS = 3
START_SLACK = 5.0
STOP_WAIT = 10.0
#: How long after a kill the dead master's lease is read (see ``measure``).
LATE_RENEWAL = 0.1

Kind: TypeAlias = Literal["gomaster", "tooz"]
Mode: TypeAlias = Literal["crash", "graceful"]


@dataclass(frozen=True, slots=True)
class Round:
    """One stop of the master and what followed (seconds)."""

    mode: str
    seconds: float
    expiry_to_work: float | None = None
    floor: float | None = None


class _LeaseReader:
    """Reads the current lease's expiry by the backend's clock (epoch seconds)."""

    def __init__(self, kind: Kind, url: str, name: str) -> None:
        self._kind = kind
        self._name = name
        self._backend = connect(url) if kind == "gomaster" else None
        self._redis = None
        if kind == "tooz":
            import redis

            self._redis = redis.Redis.from_url(url)

    def expires_at(self) -> float | None:
        if self._backend is not None:
            seen = performed(self._backend.observe(self._name, 5.0))
            record = seen.map(lambda observation: observation.record).value_or(None)
            return record.expires_at if record is not None else None
        if self._redis is not None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.time()
            pipe.pttl(lock_key(self._name))
            (seconds, micros), left = pipe.execute()
            return seconds + micros / 1e6 + left / 1000 if left >= 0 else None
        return None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._redis is not None:
            self._redis.close()


def renewal_cycle(kind: Kind, ttl: float) -> float:
    """How often the master renews: the random stop moment is drawn from one such cycle."""
    return Timing.from_ttl(ttl).heartbeat if kind == "gomaster" else renewal_period(ttl)


def _command(kind: Kind, url: str, log: Path, node: str, ttl: float, name: str) -> list[str]:
    if kind == "gomaster":
        command = [sys.executable, "-m", "gomaster.cli.demo", "node", "--backend", url, "--log", str(log)]
        return [*command, "--node", node, "--ttl", str(ttl), "--name", name]
    command = [sys.executable, "-m", "bench.tooz_node", "--url", url, "--log", str(log), "--node", node]
    return [*command, "--ttl", str(round(ttl)), "--group", name]


def _spawn(kind: Kind, url: str, log: Path, node: str, ttl: float, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _command(kind, url, log, node, ttl, name), start_new_session=True, stderr=subprocess.DEVNULL
    )


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def ready(kind: Kind, pid: int) -> bool:
    """True once a node can take over without starting anything: a gomaster node has joined the
    election (it does so only once its warm workers booted), a tooz node has started its heart."""
    return _threads(pid) >= WARM_THREADS


def _wait_ready(kind: Kind, nodes: dict[str, subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not all(ready(kind, process.pid) for process in nodes.values()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nodes not ready within {READY_TIMEOUT} s")
        time.sleep(READY_POLL)


def measure(
    backend_url: str,
    *,
    ttl: float,
    rounds: int,
    mode: Mode,
    seed: int = 1,
    kind: Kind = "gomaster",
    settle: float = SETTLE,
) -> list[Round]:
    """Run ``rounds`` stops of the master and time each handover."""
    if kind == "tooz" and ttl != round(ttl):
        raise ValueError(f"tooz takes whole seconds only; ttl={ttl} cannot be set")
    cycle = renewal_cycle(kind, ttl)
    chance = random.Random(seed)
    name = f"bench_{os.getpid()}_{int(time.time() * 1000)}"
    reader = _LeaseReader(kind, backend_url, name)
    results: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="gomaster-bench-") as scratch:
        log = Path(scratch) / "marks.jsonl"
        tail = MarkTail(log)
        nodes = {f"n{i}": _spawn(kind, backend_url, log, f"n{i}", ttl, name) for i in range(NODES)}
        spare = NODES
        try:
            current = tail.next_start(0.0, READY_TIMEOUT)
            for _ in range(rounds):
                _wait_ready(kind, nodes)
                time.sleep(settle + chance.uniform(0, cycle))
                victim = nodes.pop(str(current["node"]))
                stopped_at, stopped_wall = time.monotonic(), time.time()
                victim.send_signal(signal.SIGKILL if mode == "crash" else signal.SIGTERM)
                expires_at = None
                if mode == "crash":
                    # A renewal the victim sent just before it died may still be applied: read
                    # the lease again once it would have been, long before the lease can expire.
                    time.sleep(LATE_RENEWAL)
                    expires_at = reader.expires_at()
                current = tail.next_start(stopped_at, ttl * START_TTLS + START_SLACK)
                took = float(str(current["t"])) - stopped_at
                if expires_at is not None:
                    expiry = float(str(current["wall"])) - expires_at
                    results.append(Round(mode, took, expiry, expires_at - stopped_wall))
                else:
                    results.append(Round(mode, took))
                victim.wait(STOP_WAIT * 3)
                nodes[f"n{spare}"] = _spawn(kind, backend_url, log, f"n{spare}", ttl, name)
                spare += 1
        finally:
            for process in nodes.values():
                process.terminate()
            for process in nodes.values():
                try:
                    process.wait(STOP_WAIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            reader.close()
    return results


def summary(results: list[Round], ttl: float) -> dict[str, float]:
    """p50/p99/max of the rounds, in seconds and as a ratio to ttl, and the crash-only figures."""
    seconds = sorted(r.seconds for r in results)
    figures = {
        "p50": statistics.median(seconds),
        "p99": seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))],
        "max": seconds[-1],
    }
    figures |= {f"{k}/ttl": v / ttl for k, v in list(figures.items())}
    expiries = sorted(r.expiry_to_work for r in results if r.expiry_to_work is not None)
    if expiries:
        figures |= {"expiry_to_work_p50": statistics.median(expiries), "expiry_to_work_max": expiries[-1]}
    floors = sorted(r.floor for r in results if r.floor is not None)
    if floors:
        figures |= {"floor_p50/ttl": statistics.median(floors) / ttl, "floor_max/ttl": floors[-1] / ttl}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", required=True)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mode", choices=["crash", "graceful"], default="crash")
    parser.add_argument("--peer", choices=["tooz"], help="time tooz contenders instead (Redis URL)")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args()
    kind: Kind = "tooz" if args.peer == "tooz" else "gomaster"
    results = measure(args.backend, ttl=args.ttl, rounds=args.rounds, mode=args.mode, kind=kind)
    for key, value in summary(results, args.ttl).items():
        print(f"{key:22s} {value:.4f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
