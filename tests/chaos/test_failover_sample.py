"""A small sample of ``make chaos-replicated`` for ``make test``: two failovers of each
replicated backend with synchronous settings, under a running election.

Each backend's sample starts its own primary and replica (and three sentinels for Redis), three
nodes carrying two names each, and fails the primary over twice (about half a minute per
backend); ``make chaos-replicated`` runs 100 such rounds, then 50 with asynchronous settings.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.chaos.failover import BACKENDS, FailoverResult, run, spans, verdict

FAILOVERS = 2
TTL = 2.0


@pytest.fixture(scope="module", params=BACKENDS)
def sample(request: pytest.FixtureRequest) -> FailoverResult:
    with tempfile.TemporaryDirectory(prefix="gomaster-failover-sample-") as workdir:
        return run(request.param, "sync", FAILOVERS, ttl=TTL, seed=3, workdir=Path(workdir))


def test_every_failover_ran_and_the_masters_came_back(sample: FailoverResult) -> None:
    assert sample.harness_errors == [], sample.harness_errors
    assert len(sample.group.outcomes) == FAILOVERS
    assert len(sample.promotions) == FAILOVERS, "a primary was not failed over"
    # A new tenure began after each failover only if the old master lost its lease; either way
    # every name had a master again before the next round (else a "no master" violation).
    assert [v for v in sample.group.violations if v.what.startswith("no master")] == []


def test_synchronous_replication_keeps_one_master_and_rising_tokens_through_failovers(
    sample: FailoverResult,
) -> None:
    assert sum(v.tenures for v in sample.verdicts.values()) >= len(sample.verdicts)
    for lock, found in sample.verdicts.items():
        assert found.overlaps == [], f"{lock}: two masters at once: {found.overlaps}"
        assert found.regressions == [], f"{lock}: a token went down: {found.regressions}"
        assert found.repeated == [], f"{lock}: a token was handed out twice: {found.repeated}"


def test_synchronous_replication_keeps_every_scheduled_tick_to_one_run_through_failovers(
    sample: FailoverResult,
) -> None:
    assert sum(v.ticks for v in sample.group.ticks.values()) > 0, "no scheduled tick ran"
    assert sample.ticks("duplicates") == 0, "a tick ran twice: the failover lost its start"
    assert sample.ticks("demoted_writes") == 0, "a demoted master started a tick"


def test_the_judge_tells_a_repeated_token_apart_from_one_tenure() -> None:
    """Two start marks of one token, by two nodes, are two tenures; at work together, an overlap
    that fencing cannot resolve (the newer token is not higher)."""
    marks: list[dict[str, object]] = [
        {"event": "start", "token": 4, "node": "n1:1", "t": 1.0},
        {"event": "alive", "token": 4, "node": "n1:1", "t": 2.0},
        {"event": "start", "token": 4, "node": "n2:2", "t": 1.5},
        {"event": "alive", "token": 4, "node": "n2:2", "t": 3.0},
        {"event": "start", "token": 3, "node": "n3:3", "t": 4.0},
    ]
    found = verdict(spans(marks))
    assert (found.tenures, found.repeated, len(found.overlaps), found.fenced) == (3, [4], 1, 0)
    assert [(a.token, b.token) for a, b in found.regressions] == [(4, 3)]
