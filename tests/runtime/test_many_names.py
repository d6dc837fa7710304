"""One supervisor, many lock names: each name an election of its own, its work its own.

The witness log's marks carry the lock name; every assertion is about what ran, per name.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.runtime.cluster import Cluster, alive, overlaps

TTL = 2.0


def _masters(events: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Which nodes' work started, per lock name."""
    found: dict[str, set[str]] = {}
    for event in events:
        if event["event"] == "start":
            found.setdefault(event["lock"], set()).add(event["node"])
    return found


def _of(events: list[dict[str, Any]], lock: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("lock") == lock]


def test_each_name_of_a_supervisor_is_elected_on_its_own_and_fails_over_on_its_own(cluster: Cluster) -> None:
    cluster.start("--node", "a", "--names", "one,both")
    cluster.wait_for("a masters both names", lambda ev: set(_masters(ev)) == {"one", "both"}, 10)
    second = cluster.start("--node", "b", "--names", "both,two")
    cluster.wait_for("b masters two", lambda ev: "b" in _masters(ev).get("two", set()), 10)
    time.sleep(TTL)
    assert _masters(cluster.events()) == {"one": {"a"}, "both": {"a"}, "two": {"b"}}

    os.kill(cluster.supervisor_of("a"), signal.SIGKILL)
    killed_at = time.monotonic()
    cluster.wait_for("b takes over both", lambda ev: "b" in _masters(ev).get("both", set()), TTL + 2)
    taken = next(e for e in _of(cluster.events(), "both") if e["event"] == "start" and e["node"] == "b")
    assert taken["t"] - killed_at <= TTL + 1.0
    events = cluster.events()
    for lock in ("one", "both", "two"):
        assert overlaps(_of(events, lock)) == [], lock
    # b's tenure of "two" went on untouched by the failover of "both".
    assert {e["token"] for e in _of(events, "two") if e["event"] == "start"} == {1}
    assert second.poll() is None


def test_a_name_whose_work_keeps_crashing_leaves_the_other_names_their_masters_and_their_work(
    cluster: Cluster,
) -> None:
    names = "steady,crashing,calm"
    cluster.start("--node", "a", "--names", names, "--crash", "crashing")
    cluster.wait_for("a masters every name", lambda ev: set(_masters(ev)) == set(names.split(",")), 10)
    cluster.start("--node", "b", "--names", names)
    cluster.wait_for(
        "three starts of the crashing work",
        lambda ev: len([e for e in _of(ev, "crashing") if e["event"] == "start"]) >= 3,
        10,
    )
    time.sleep(2 * TTL)
    events = cluster.events()
    assert _masters(events) == {"steady": {"a"}, "crashing": {"a"}, "calm": {"a"}}
    for lock in ("steady", "calm"):
        starts = [e for e in _of(events, lock) if e["event"] == "start"]
        assert len(starts) == 1, f"{lock} restarted: {starts}"
        last = [e for e in _of(events, lock) if e["event"] == "alive"][-1]
        assert alive(last["pid"]) and time.monotonic() - last["t"] < 0.5, f"{lock}'s work stalled"
    tokens = {e["token"] for e in _of(events, "crashing") if e["event"] == "start"}
    assert tokens == {1}, f"the crashing name changed hands: {tokens}"
