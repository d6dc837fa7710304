"""Workers forked by a zygote: who their parent is, what a follower keeps, and what happens when
the zygote dies or freezes while the node is master."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from gomaster.runtime.supervisor import BACKOFF_FIRST, START_LIMIT_MIN, START_LIMIT_TTLS, ZYGOTE_RESTART_EVERY
from gomaster.runtime.zygote import FORK_TIMEOUT
from tests.runtime.cluster import Cluster, alive, children, kill_quietly, wait_gone

TTL = 2.0  # the ttl of the cluster fixture (tests/runtime/conftest.py)
STARTUP = 15.0
#: Time for a replaced zygote to boot, on top of the restart pause.
ZYGOTE_BOOT = 5.0


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(") ", 1)[-1].split()[1])


def _tree(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    found, todo = {pid}, [pid]
    while todo:
        below = children(todo.pop())
        todo += below - found
        found |= below
    return found


def _start(cluster: Cluster, token: int, other_than: int | None = None) -> dict[str, Any]:
    def found(events: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next(
            (
                e
                for e in events
                if e["event"] == "start" and e["token"] == token and e["pid"] != other_than
            ),
            None,
        )

    started: dict[str, Any] = cluster.wait_for(f"a start of token {token}", found, STARTUP)
    return started


def _command(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as line:
        return line.read().replace(b"\0", b" ").decode(errors="replace")


def _master_and_follower(cluster: Cluster, *extra: str) -> tuple[dict[str, Any], int]:
    """Node a becomes master (its first start is returned), then node b joins and follows (its
    supervisor's PID is returned); ``extra`` goes to both nodes' command lines."""
    cluster.start("--node", "a", *extra)
    first = _start(cluster, 1)
    cluster.start("--node", "b", *extra)
    cluster.wait_for("node b", lambda ev: any(e["event"] == "node" and e["node"] == "b" for e in ev), STARTUP)
    return first, cluster.supervisor_of("b")


def test_a_follower_keeps_only_its_zygote_and_one_spare_worker_and_a_masters_worker_is_forked_by_it(
    cluster: Cluster,
) -> None:
    first, follower = _master_and_follower(cluster)
    time.sleep(1.0)  # b has joined and follows
    master = cluster.supervisor_of("a")
    keeper = first["ppid"]
    zygote = _parent(keeper)
    assert _parent(zygote) == master, "the worker's parent is not the master's zygote"
    kept = _tree(follower) - {follower}
    zygotes = [pid for pid in kept if _parent(pid) == follower]
    assert len(zygotes) == 1, f"a follower runs {len(zygotes)} processes of its own, not one zygote"
    spares = kept - set(zygotes)
    assert len(spares) == 1, f"a follower keeps {len(spares)} workers ready, not one spare"
    assert _parent(spares.pop()) == zygotes[0], "the spare was not forked by the zygote"


def test_a_killed_target_restarts_at_once_from_the_same_zygote(cluster: Cluster) -> None:
    cluster.start("--node", "a")
    first = _start(cluster, 1)
    zygote = _parent(first["ppid"])
    killed_at = time.monotonic()
    os.kill(first["pid"], signal.SIGKILL)
    again = _start(cluster, 1, other_than=first["pid"])
    assert again["node"] == "a"
    assert _parent(again["ppid"]) == zygote
    assert again["t"] - killed_at <= BACKOFF_FIRST + 0.5, f"restart took {again['t'] - killed_at:.3f} s"


def test_a_killed_zygote_takes_its_workers_along_and_the_master_restarts_them_on_a_new_one(
    cluster: Cluster,
) -> None:
    cluster.start("--node", "a")
    first = _start(cluster, 1)
    supervisor, keeper = cluster.supervisor_of("a"), first["ppid"]
    zygote = _parent(keeper)
    os.kill(zygote, signal.SIGKILL)
    wait_gone([keeper, first["pid"]], 2.0)
    again = _start(cluster, 1, other_than=first["pid"])
    assert again["node"] == "a", "mastership changed hands"
    replacement = _parent(again["ppid"])
    assert replacement != zygote and _parent(replacement) == supervisor


def test_a_frozen_zygote_is_replaced_when_a_restart_needs_it(cluster: Cluster) -> None:
    cluster.start("--node", "a", "--mode", "exit")  # the work exits non-zero: restarts forever
    first = _start(cluster, 1)
    zygote = _parent(first["ppid"])
    os.kill(zygote, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        seen = {e["pid"] for e in cluster.starts()}

        def restarted(events: list[dict[str, Any]]) -> dict[str, Any] | None:
            fresh = [e for e in events if e["event"] == "start" and e["pid"] not in seen]
            return next((e for e in fresh if e["zygote"] != zygote), None)

        limit = FORK_TIMEOUT + ZYGOTE_RESTART_EVERY + ZYGOTE_BOOT
        again = cluster.wait_for("a start on a new zygote", restarted, limit + 5.0)
        assert again["token"] == 1, "the master resigned instead of replacing its zygote"
        assert again["t"] - frozen_at < limit
        assert not alive(zygote), "the frozen zygote was left behind"
    finally:
        kill_quietly(zygote, signal.SIGCONT)


def test_a_master_whose_zygote_never_comes_back_hands_the_lock_over(cluster: Cluster) -> None:
    """The lease must not stay held while no work can run: here every zygote of node a is frozen
    (the first once running, each replacement at birth), and node b takes over."""
    cluster.start("--node", "a", "--mode", "exit")  # the work exits non-zero: restarts forever
    first = _start(cluster, 1)
    supervisor = cluster.supervisor_of("a")
    cluster.start("--node", "b", "--mode", "exit")
    cluster.wait_for("node b", lambda ev: any(e["event"] == "node" and e["node"] == "b" for e in ev), STARTUP)
    frozen = {_parent(first["ppid"])}
    kill_quietly(next(iter(frozen)), signal.SIGSTOP)
    limit = FORK_TIMEOUT + max(START_LIMIT_TTLS * TTL, START_LIMIT_MIN) + 2 * TTL + 5.0
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline and not any(e["token"] == 2 for e in cluster.starts()):
            for pid in children(supervisor) - frozen:
                if "gomaster.runtime.zygote" in _command(pid):
                    kill_quietly(pid, signal.SIGSTOP)
                    frozen.add(pid)
            time.sleep(0.005)
        taken = [e for e in cluster.starts() if e["token"] == 2]
    finally:
        for pid in frozen:
            kill_quietly(pid, signal.SIGCONT)
    assert len(frozen) >= 2, "node a never replaced its frozen zygote"
    assert taken and taken[0]["node"] == "b", f"node b did not take over within {limit:.1f} s"


def _spare_of(supervisor: int, other_than: set[int]) -> int:
    """The one worker the node keeps ready below its zygote, once it is not one of ``other_than``."""
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        zygotes = children(supervisor)
        spares = {pid for zygote in zygotes for pid in children(zygote)} - other_than
        if len(zygotes) == 1 and len(spares) == 1:
            return spares.pop()
        time.sleep(0.02)
    raise AssertionError(f"no single new spare below {supervisor}'s zygote within {STARTUP} s")


def test_a_killed_spare_is_replaced_and_the_next_election_runs_its_work_on_the_spare(
    cluster: Cluster,
) -> None:
    first, follower = _master_and_follower(cluster)
    spare = _spare_of(follower, set())
    os.kill(spare, signal.SIGKILL)
    replacement = _spare_of(follower, {spare})
    os.kill(cluster.supervisor_of("a"), signal.SIGKILL)
    again = _start(cluster, 2, other_than=first["pid"])
    assert again["node"] == "b"
    assert again["ppid"] == replacement, "the work did not run on the spare the node kept ready"
    _spare_of(follower, {spare, replacement})  # and another spare takes its place


def test_without_a_spare_a_follower_is_two_processes_and_an_election_forks_its_worker(
    cluster: Cluster,
) -> None:
    first, follower = _master_and_follower(cluster, "--no-spare")
    time.sleep(1.0)  # b has joined and follows
    assert len(_tree(follower)) == 2, "a follower told to keep no spare keeps one"
    before = _tree(follower)
    os.kill(cluster.supervisor_of("a"), signal.SIGKILL)
    again = _start(cluster, 2, other_than=first["pid"])
    assert again["node"] == "b"
    assert again["ppid"] not in before, "the work ran on a worker forked before the election"
    assert _parent(_parent(again["ppid"])) == follower
