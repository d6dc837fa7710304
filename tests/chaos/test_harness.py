"""The harness's own bookkeeping, without processes: schedules, references and the log tail."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from tests.chaos.harness import (
    FRESH,
    Fault,
    Group,
    Plan,
    _Tail,
    kinds_for,
    liveness_bound,
)


def _fault(kind: str) -> Fault:
    return Fault(
        group=0, index=0, kind=kind, lock="lock-a", target="x", token=1, started=10.0, cleared=12.0, detail=""
    )


def test_backend_faults_start_the_liveness_clock_when_they_clear_node_faults_when_they_begin() -> None:
    assert _fault("freeze_backend").reference == 12.0
    assert _fault("restart_backend").reference == 12.0
    assert _fault("lock_backend").reference == 12.0
    assert _fault("cut_node").reference == 10.0
    assert _fault("freeze_node").reference == 10.0


def test_sqlite_gets_no_proxy_or_server_faults() -> None:
    assert set(kinds_for("sqlite")) == {"kill_supervisor", "kill_worker", "freeze_node", "lock_backend"}
    assert "restart_backend" in kinds_for("mysql") and "lock_backend" not in kinds_for("mysql")


def test_the_bound_is_ttl_plus_two_heartbeats() -> None:
    assert liveness_bound(Plan(backend="sqlite", faults=1, ttl=1.0).timing) == pytest.approx(1.4)


def test_faults_are_shared_out_evenly_among_groups() -> None:
    plan = Plan(backend="sqlite", faults=1000, groups=3)
    assert [plan.faults_of(g) for g in range(3)] == [334, 333, 333]


def test_the_schedule_runs_every_kind_once_per_round_in_a_seeded_order(tmp_path: Path) -> None:
    def rounds(seed: int) -> list[str]:
        group = Group(Plan(backend="mysql", faults=16, seed=seed), 0, tmp_path, None)
        return list(itertools.islice(group.schedule(), 16))

    first = rounds(1)
    assert sorted(first[:8]) == sorted(kinds_for("mysql")) == sorted(first[8:])
    assert first == rounds(1)
    assert first != rounds(2)


def test_the_tail_follows_the_newest_token_and_ignores_stale_marks(tmp_path: Path) -> None:
    log = tmp_path / "lock.jsonl"
    tail = _Tail(log)
    tail.poll()
    assert not tail.working(0.0)
    marks = [
        {"event": "start", "token": 1, "node": "a", "pid": 11, "t": 1.0},
        {"event": "start", "token": 2, "node": "b", "pid": 22, "t": 2.0},
        {"event": "alive", "token": 1, "node": "a", "pid": 11, "t": 2.1},
    ]
    log.write_text("".join(json.dumps(mark) + "\n" for mark in marks) + '{"event": "al')
    tail.poll()
    assert (tail.token, tail.node, tail.pid, tail.last) == (2, "b", 22, 2.0)
    assert tail.working(2.0 + FRESH / 2) and not tail.working(2.0 + FRESH)
    with log.open("a") as more:
        more.write('ive", "token": 2, "node": "b", "pid": 23, "t": 2.05}\n')
    tail.poll()
    assert (tail.pid, tail.last) == (23, 2.05), "the half-written line is read once it is complete"
