"""Real processes on a real backend: crashes, signals and freezes of the master."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from gomaster import Timing
from tests.runtime.cluster import Cluster, alive, overlaps, wait_gone

TTL = 2.0  # the ttl of the cluster fixture (tests/runtime/conftest.py)
TIMING = Timing.from_ttl(TTL)
STARTUP = 15.0


def _start_of(token: int) -> Any:
    def find(events: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next((e for e in events if e["event"] == "start" and e["token"] == token), None)

    return find


def _two_nodes_first_master(cluster: Cluster, *extra: str) -> tuple[dict[str, Any], str]:
    """Node "a" becomes master; node "b" is up and following. Returns a's start and b's name."""
    cluster.start("--node", "a", *extra)
    first = cluster.wait_for("the first master", _start_of(1), STARTUP)
    assert first["node"] == "a"
    cluster.start("--node", "b", *extra)
    cluster.wait_for("node b", lambda ev: any(e["event"] == "node" and e["node"] == "b" for e in ev), STARTUP)
    time.sleep(1.0)  # b's election loop and zygote are up
    return first, "b"


def test_sigkilled_master_loses_its_work_within_1s_and_another_node_takes_over_within_ttl_plus_1s(
    cluster: Cluster,
) -> None:
    first, follower = _two_nodes_first_master(cluster, "--child")
    child = cluster.wait_for(
        "a's child process", lambda ev: [e for e in ev if e["event"] == "child"], STARTUP
    )[0]
    supervisor = cluster.supervisor_of("a")
    killed_at = time.monotonic()
    os.kill(supervisor, signal.SIGKILL)
    gone_after = wait_gone([first["pid"], child["child"]], timeout=1.0)
    second = cluster.wait_for("a new master", _start_of(2), TTL + 1.0 + 1.0)
    assert second["node"] == follower
    assert second["t"] - killed_at <= TTL + 1.0, f"failover took {second['t'] - killed_at:.3f} s"
    assert gone_after <= 1.0
    assert overlaps(cluster.events()) == []


def test_sigtermed_master_hands_over_within_retry_plus_half_a_second(cluster: Cluster) -> None:
    _two_nodes_first_master(cluster)
    node_a = cluster.nodes[0]
    signalled_at = time.monotonic()
    node_a.send_signal(signal.SIGTERM)
    second = cluster.wait_for("the handover", _start_of(2), STARTUP)
    handover = second["t"] - signalled_at
    assert handover <= TIMING.retry + 0.5, f"handover took {handover:.3f} s"
    assert node_a.wait(10) == 0
    assert overlaps(cluster.events()) == []


def _node_pids(supervisor: int) -> list[int]:
    """The supervisor and every process below it."""
    found = [supervisor]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                ppid = int(stat.read().split(") ")[-1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if ppid == supervisor:
            found += _node_pids(int(pid))
    return found


def test_frozen_master_stops_its_work_within_0_2s_of_resuming_and_the_new_master_took_over_meanwhile(
    cluster: Cluster,
) -> None:
    first, follower = _two_nodes_first_master(cluster)
    frozen = _node_pids(cluster.supervisor_of("a"))
    assert first["pid"] in frozen
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    second = cluster.wait_for("a master during the freeze", _start_of(2), TTL + 2.0)
    time.sleep(0.5)
    resumed_at = time.monotonic()
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    wait_gone([first["pid"]], timeout=2.0)
    assert second["node"] == follower
    assert stopped_at < second["t"] < resumed_at
    late_marks = [
        e["t"] - resumed_at for e in cluster.events() if e.get("token") == 1 and e["t"] > resumed_at
    ]
    assert all(delay <= 0.2 for delay in late_marks), f"old work ran {max(late_marks):.3f} s after resuming"
    assert not alive(first["pid"])
    # Only the old token's work may overlap the new tenure, and only while it was frozen.
    assert all(pair == (1, 2) for pair in overlaps(cluster.events()))


@pytest.mark.parametrize("mode", ["raise", "exit"])
def test_a_failing_target_is_restarted_and_the_election_is_untouched(cluster: Cluster, mode: str) -> None:
    _two_nodes_first_master(cluster, "--mode", mode)
    cluster.wait_for("three restarts", lambda ev: len([e for e in ev if e["event"] == "start"]) >= 3, 10)
    time.sleep(TTL)
    restarts = cluster.starts()
    tokens = {e["token"] for e in cluster.starts()}
    assert tokens == {1}, f"mastership changed hands: {tokens}"
    assert {e["node"] for e in restarts} == {"a"}
    assert all(node.poll() is None for node in cluster.nodes)


def test_a_hanging_target_does_not_disturb_renewals(cluster: Cluster) -> None:
    first, _ = _two_nodes_first_master(cluster)
    time.sleep(3 * TTL)
    assert {e["token"] for e in cluster.starts()} == {1}
    last = [e for e in cluster.events() if e["event"] == "alive"][-1]
    assert last["pid"] == first["pid"]
    assert time.monotonic() - last["t"] < 0.5


def test_a_target_that_returns_is_done_and_not_restarted(cluster: Cluster) -> None:
    _two_nodes_first_master(cluster, "--mode", "return")
    time.sleep(2 * TTL)
    assert len(cluster.starts()) == 1
    assert [e["event"] for e in cluster.events() if e["event"] == "done"] == ["done"]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("mysql", marks=pytest.mark.mysql, id="mysql"),
        pytest.param("mongodb", marks=pytest.mark.mongodb, id="mongodb"),
    ],
)
def test_sigkill_failover_on_every_backend_has_no_overlap_and_takes_at_most_ttl_plus_1s(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}" if kind == "sqlite" else request.getfixturevalue(f"{kind}_url")
    cluster = Cluster(backend=url, log=tmp_path / "witness.jsonl", ttl=TTL, name=f"e2e-{tmp_path.name}")
    try:
        first, follower = _two_nodes_first_master(cluster, "--child")
        killed_at = time.monotonic()
        os.kill(cluster.supervisor_of("a"), signal.SIGKILL)
        wait_gone([first["pid"]], timeout=1.0)
        second = cluster.wait_for("a new master", _start_of(2), TTL + 2.0)
        assert second["node"] == follower
        assert second["t"] - killed_at <= TTL + 1.0
        assert overlaps(cluster.events()) == []
    finally:
        cluster.stop_all()
