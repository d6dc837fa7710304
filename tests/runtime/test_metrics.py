"""Metrics and on_new_leader, scraped from a real registry while real processes elect."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gomaster import LockRecord, Master, Timing
from gomaster.metrics import Metrics
from tests.helpers import wait_until

TIMING = Timing.from_ttl(1.0)


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} missing from:\n{generate_latest(registry).decode()}"
    return value


def test_metrics_and_new_leader_callbacks_follow_the_election(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    registry = CollectorRegistry()
    seen_by_leader: list[LockRecord | None] = []
    seen_by_follower: list[LockRecord | None] = []
    leader = Master(
        url,
        name="m",
        timing=TIMING,
        metrics=Metrics(name="m", registry=registry),
        on_new_leader=seen_by_leader.append,
    )
    follower = Master(url, name="m", timing=TIMING, on_new_leader=seen_by_follower.append)
    try:
        leader.start()
        wait_until(leader.is_master)
        follower.start()
        wait_until(lambda: any(r is not None and r.holder == leader.id for r in seen_by_follower))
        time.sleep(3 * TIMING.heartbeat)
        assert _sample(registry, "gomaster_is_master", lock="m") == 1
        assert _sample(registry, "gomaster_token", lock="m") == 1
        assert _sample(registry, "gomaster_transitions_total", lock="m", to="leader") == 1
        assert _sample(registry, "gomaster_renew_seconds_count", lock="m") >= 2
        assert 0 <= _sample(registry, "gomaster_seconds_since_renewal", lock="m") <= TIMING.renew_deadline
        assert any(r is not None and r.holder == leader.id and r.token == 1 for r in seen_by_leader)
        leader.stop(timeout=10)
        wait_until(follower.is_master, timeout=5)
        wait_until(
            lambda: any(r is not None and r.holder == follower.id and r.token == 2 for r in seen_by_follower)
        )
        assert _sample(registry, "gomaster_is_master", lock="m") == 0
        assert _sample(registry, "gomaster_transitions_total", lock="m", to="stopped") == 1
    finally:
        leader.stop(timeout=10)
        follower.stop(timeout=10)
