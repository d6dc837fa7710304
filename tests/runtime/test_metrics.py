"""Metrics and on_new_leader, scraped from a real registry while real processes elect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gomaster import LockRecord, Master, Timing
from gomaster.metrics import Metrics
from tests.helpers import wait_until
from tests.runtime.cluster import ROOT

TIMING = Timing.from_ttl(1.0)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} missing from:\n{generate_latest(registry).decode()}"
    return value


def test_metrics_and_new_leader_callbacks_follow_the_election(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    registry = CollectorRegistry()
    seen: list[LockRecord | None] = []
    other = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.app", url, "m", "master"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    node = Master(
        url, name="m", timing=TIMING, metrics=Metrics(name="m", registry=registry), on_new_leader=seen.append
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        node.start()
        wait_until(lambda: any(r is not None and r.token == 1 and r.holder != node.id for r in seen))
        assert not node.is_master()
        assert _sample(registry, "gomaster_is_master", lock="m") == 0
        other.kill()  # the other node dies: this one takes over when its lease expires
        wait_until(node.is_master, timeout=TIMING.ttl + 5)
        time.sleep(3 * TIMING.heartbeat)
        assert _sample(registry, "gomaster_is_master", lock="m") == 1
        assert _sample(registry, "gomaster_token", lock="m") == 2
        assert _sample(registry, "gomaster_transitions_total", lock="m", to="leader") == 1
        assert _sample(registry, "gomaster_renew_seconds_count", lock="m") >= 2
        assert 0 <= _sample(registry, "gomaster_seconds_since_renewal", lock="m") <= TIMING.renew_deadline
        assert any(r is not None and r.holder == node.id and r.token == 2 for r in seen)
        node.stop(timeout=10)
        assert _sample(registry, "gomaster_is_master", lock="m") == 0
        assert _sample(registry, "gomaster_transitions_total", lock="m", to="stopped") == 1
    finally:
        node.stop(timeout=10)
        other.kill()
        other.wait(5)
