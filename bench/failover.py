"""Failover and handover times on a real backend, from the work's own first action.

    python -m bench.failover --backend URL [--ttl 2] [--rounds 20] [--mode crash|graceful]

Three ``gomaster.demo`` nodes contend; each round stops the current master (SIGKILL for
``crash``, SIGTERM for ``graceful``) at a random moment of its renewal cycle and times how long
until the next master's work writes its first mark. For crashes it also reports expiry -> work:
from the dead master's lease expiry (the backend's clock, read from the record) to that mark.
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

from returns.result import Success

from gomaster.backends import connect
from gomaster.core.timing import Timing
from gomaster.history import read_marks
from gomaster.runtime._io import performed

NODES = 3
#: After a new master starts, wait this long so the replacement node is up and warm.
SETTLE = 1.5
POLL = 0.001


@dataclass(frozen=True, slots=True)
class Round:
    """One stop of the master and what followed."""

    mode: str
    seconds: float
    expiry_to_work: float | None


def _spawn(backend: str, log: Path, node: str, ttl: float, name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "gomaster.demo", "node", "--backend", backend, "--log", str(log)]
    command += ["--node", node, "--ttl", str(ttl), "--name", name]
    return subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)


def _first_start(log: Path, token: int, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mark in read_marks(log):
            if mark.get("event") == "start" and mark.get("token") == token:
                return mark
        time.sleep(POLL)
    raise RuntimeError(f"no master with token {token} within {timeout} s")


def measure(backend_url: str, *, ttl: float, rounds: int, mode: str, seed: int = 1) -> list[Round]:
    """Run ``rounds`` stops of the master and time each handover."""
    timing = Timing.from_ttl(ttl)
    chance = random.Random(seed)
    backend = connect(backend_url)
    name = f"bench-{os.getpid()}-{int(time.time())}"
    results: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="gomaster-bench-") as scratch:
        log = Path(scratch) / "marks.jsonl"
        nodes = {f"n{i}": _spawn(backend_url, log, f"n{i}", ttl, name) for i in range(NODES)}
        spare = NODES
        try:
            current = _first_start(log, 1, 30.0)
            for token in range(1, rounds + 1):
                time.sleep(SETTLE + chance.uniform(0, timing.heartbeat))
                victim = nodes.pop(str(current["node"]))
                stopped_at = time.monotonic()
                victim.send_signal(signal.SIGKILL if mode == "crash" else signal.SIGTERM)
                expires_at: float | None = None
                if mode == "crash":
                    seen = performed(backend.observe(name, 5.0))
                    if isinstance(seen, Success) and seen.unwrap().record is not None:
                        expires_at = seen.unwrap().record.expires_at
                current = _first_start(log, token + 1, ttl * 3 + 5)
                took = float(str(current["t"])) - stopped_at
                expiry = float(str(current["wall"])) - expires_at if expires_at is not None else None
                results.append(Round(mode, took, expiry))
                victim.wait(30)
                nodes[f"n{spare}"] = _spawn(backend_url, log, f"n{spare}", ttl, name)
                spare += 1
        finally:
            for process in nodes.values():
                process.terminate()
            for process in nodes.values():
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            backend.close()
    return results


def summary(results: list[Round], ttl: float) -> dict[str, float]:
    """p50/p99/max of the rounds, in seconds and as a ratio to ttl."""
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
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", required=True)
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--mode", choices=["crash", "graceful"], default="crash")
    parser.add_argument("--json", type=Path, help="also write the rounds here")
    args = parser.parse_args()
    results = measure(args.backend, ttl=args.ttl, rounds=args.rounds, mode=args.mode)
    for key, value in summary(results, args.ttl).items():
        print(f"{key:22s} {value:.4f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
