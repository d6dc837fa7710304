"""The guarantees, checked on the deterministic simulation of a faulty cluster.

Each run is a few simulated minutes of five electors sharing one model store, through windows
of crashes, freezes, slow and lost messages and drifting clocks, each followed by a quiet spell
in which liveness and a graceful handover are measured. See :mod:`tests.core.simulation`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import replace
from functools import cache

import pytest

from gomaster.core import election
from gomaster.core.election import Config, Input, Leader, State, Step
from gomaster.core.timing import Timing
from tests.core import simulation
from tests.core.simulation import (
    DEFAULT_TIMING,
    Freeze,
    Overlap,
    Report,
    Scenario,
    Tenure,
    find_overlaps,
    run,
    token_order_problems,
    unexplained_overlaps,
)

SEEDS = range(6)
STEPS = 20_000
#: Broken settings only break things now and then; these short runs are enough to show it.
PROBE_SEEDS = range(16)
PROBE_STEPS = 10_000

LONG_FREEZES = Scenario(freeze_max=3 * DEFAULT_TIMING.ttl)
#: With the default proportions (renew_deadline 0.6 ttl, grace 0.2 ttl) a leader's clock must
#: run more than 25 % slow before its deadline plus grace can outlast the lease; 20 % cannot.
EXCESSIVE_DRIFT = Scenario(drift=0.4)


def unchecked_timing(**values: float) -> Timing:
    """A Timing that skips validation, to show what the rules prevent. Never do this elsewhere."""
    timing = object.__new__(Timing)
    for name, value in values.items():
        object.__setattr__(timing, name, value)
    return timing


#: renew_deadline + grace >= ttl: the old work may still run when the lease expires.
OUTLASTING = Scenario(
    timing=unchecked_timing(ttl=2.0, heartbeat=0.4, renew_deadline=1.6, retry=0.4, grace=0.6, max_drift=0.01)
)


DEFAULT = Scenario()
NOTIFYING = Scenario(notify=True)


@cache
def simulated(seed: int, scenario: Scenario = DEFAULT, steps: int = STEPS) -> Report:
    """One run per seed and scenario, shared by the tests that check different things on it."""
    return run(seed, steps, scenario)


def lines(problems: Iterable[object]) -> str:
    """Problems one per line, for an assertion message."""
    return "\n".join(map(str, problems))


# ---- the guarantees under faults within the assumptions -----------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_no_two_masters_when_every_freeze_is_shorter_than_the_safety_margin(seed: int) -> None:
    report = simulated(seed)
    assert report.counts["crashes"] > 0 and report.counts["freezes"] > 0, report.summary()
    assert report.counts["long delays"] > 0 and report.counts["timeouts"] > 0, report.summary()
    assert max(f.end - f.start for f in report.freezes) < DEFAULT_TIMING.safety_margin
    assert not report.overlaps, f"two masters at once:\n{lines(report.overlaps)}"
    assert not report.machine, lines(report.machine)


@pytest.mark.parametrize("seed", SEEDS)
def test_tokens_strictly_increase_in_tenure_start_order(seed: int) -> None:
    report = simulated(seed)
    assert len(report.tenures) > 10, report.summary()
    assert not report.token_order, lines(report.token_order)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_leader_follows_the_faults_within_the_liveness_bound(seed: int) -> None:
    report = simulated(seed)
    assert not report.liveness, lines(report.liveness)
    assert len(report.recoveries) >= 5, f"too few quiet spells were checked: {report.summary()}"
    assert report.failovers, f"no leader crash was measured: {report.summary()}"
    bound = report.scenario.liveness_bound()
    assert max(report.failovers) <= bound, f"slowest failover {max(report.failovers):.3f} s > {bound:.3f} s"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_graceful_stop_hands_over_within_one_retry_and_the_delays(seed: int) -> None:
    report = simulated(seed)
    assert len(report.handovers) >= 5, report.summary()
    bound = report.scenario.handover_bound()
    assert max(report.handovers) <= bound, f"slowest handover {max(report.handovers):.3f} s > {bound:.3f} s"


@pytest.mark.parametrize("seed", SEEDS)
def test_clocks_drifting_by_the_whole_declared_max_drift_stay_safe_and_live(seed: int) -> None:
    """A timing that declares 15 % drift, and every clock 15 % fast or slow: the validation
    rule alone, with its small safety margin, is what keeps the old work from overlapping."""
    drifting = Scenario(timing=DEFAULT_TIMING.replace(max_drift=0.15))
    report = simulated(seed, drifting)
    assert not report.overlaps, f"two masters at once:\n{lines(report.overlaps)}"
    assert not report.safety_problems(), lines(report.safety_problems())
    assert not report.liveness, lines(report.liveness)


def test_notification_makes_the_handover_a_matter_of_round_trips() -> None:
    notifying = NOTIFYING
    handovers = [h for seed in SEEDS for h in simulated(seed, notifying).handovers]
    assert handovers and max(handovers) <= notifying.handover_bound()
    assert statistics.median(handovers) < 4 * notifying.delay_max + notifying.start_delay_max + 0.05, (
        f"median handover {statistics.median(handovers):.3f} s with notification"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_with_notices_followers_sleep_longer_yet_a_crashed_leader_is_followed_as_soon(seed: int) -> None:
    """Followers with live notices look near each expiry, not every retry; the lease of a leader
    that crashed is still claimed at its expiry, within the same liveness bound, and safely."""
    report = simulated(seed, NOTIFYING)
    assert not report.overlaps, f"two masters at once:\n{lines(report.overlaps)}"
    assert not report.safety_problems(), lines(report.safety_problems())
    assert not report.liveness, lines(report.liveness)
    assert report.failovers, f"no leader crash was measured: {report.summary()}"
    bound = NOTIFYING.liveness_bound()
    assert max(report.failovers) <= bound, f"slowest failover {max(report.failovers):.3f} s > {bound:.3f} s"


def test_with_notices_followers_look_less_than_half_as_often() -> None:
    def looks_per_second(scenario: Scenario) -> float:
        reports = [simulated(seed, scenario) for seed in SEEDS]
        return sum(r.counts["looks"] for r in reports) / sum(r.sim_seconds for r in reports)

    polling, notified = looks_per_second(DEFAULT), looks_per_second(NOTIFYING)
    assert notified < polling / 2, f"{notified:.2f} looks/s with notices, {polling:.2f} without"


def test_lost_notices_were_simulated_and_noticed_by_the_listeners() -> None:
    failures = sum(simulated(seed, NOTIFYING).counts["listener failures"] for seed in SEEDS)
    assert failures > 0, "no notice was lost: the runs never tried a follower whose notices lapsed"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_long_freeze_overlaps_only_old_fenced_work_that_stops_within_grace_of_waking(seed: int) -> None:
    report = simulated(seed, LONG_FREEZES)
    assert not report.unexplained, lines(report.unexplained)
    assert not report.token_order, lines(report.token_order)
    assert not report.machine, lines(report.machine)


def test_long_freezes_do_make_old_work_overlap_new_work() -> None:
    overlaps = [o for seed in SEEDS for o in simulated(seed, LONG_FREEZES).overlaps]
    assert overlaps, "freezes of up to 3 ttl never let old work outlive its lease: the check proves nothing"


def test_the_same_seed_replays_exactly() -> None:
    first = run(7, 5_000)
    assert run(7, 5_000) == first
    assert run(8, 5_000).tenures != first.tenures


# ---- the checker can fail -------------------------------------------------------------------


def test_the_checker_finds_overlaps_when_clocks_drift_beyond_max_drift() -> None:
    found = [p for seed in PROBE_SEEDS for p in simulated(seed, EXCESSIVE_DRIFT, PROBE_STEPS).unexplained]
    assert found, "clocks 40 % slow never produced two masters: the simulation cannot see the danger"


def test_the_checker_finds_overlaps_when_deadline_and_grace_outlast_the_lease() -> None:
    found = [p for seed in PROBE_SEEDS for p in simulated(seed, OUTLASTING, PROBE_STEPS).unexplained]
    assert found, "renew_deadline + grace >= ttl never produced two masters: the check proves nothing"


def test_the_checker_finds_a_machine_that_leads_past_its_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose deadline runs one ttl too long: the simulation must catch the bug."""

    def careless(config: Config, state: State, event: Input) -> Step:
        after, commands = election.step(config, state, event)
        if isinstance(after, Leader) and not isinstance(state, Leader):
            late = after.lease.deadline + config.timing.ttl
            after = replace(after, lease=replace(after.lease, deadline=late))
        return after, commands

    monkeypatch.setattr(simulation, "step", careless)
    found = [p for seed in range(4) for p in run(seed, PROBE_STEPS).unexplained]
    assert found, "a leader that outlives its lease went unnoticed"


def test_overlap_checks_on_hand_made_histories() -> None:
    grace = DEFAULT_TIMING.grace
    old = Tenure("n1.0", 4, 10.0, 14.0)
    new = Tenure("n2.0", 5, 13.0, 20.0)
    after = Tenure("n3.0", 6, 20.0, 25.0)
    assert find_overlaps([after, new, old]) == [Overlap(old, new)], "back-to-back tenures are not an overlap"
    assert token_order_problems([old, new, after]) == []
    assert token_order_problems([old, replace(new, token=4)]), "a repeated token went unnoticed"

    excused = [Freeze("n1.0", 11.0, 14.0 - grace / 2)]
    assert unexplained_overlaps([Overlap(old, new)], excused, grace) == []
    too_slow = [Freeze("n1.0", 11.0, 14.0 - 2 * grace)]
    assert unexplained_overlaps([Overlap(old, new)], too_slow, grace), "old work ran on long after waking"
    someone_else = [Freeze("n2.0", 11.0, 14.0)]
    assert unexplained_overlaps([Overlap(old, new)], someone_else, grace), "another node's freeze excused it"
    stale_token = Overlap(replace(old, token=9), new)
    assert unexplained_overlaps([stale_token], excused, grace), "old work with a newer token was excused"


def test_a_backend_clock_step_beyond_the_margin_is_detected_by_the_leaders() -> None:
    timing = simulation.DEFAULT_TIMING
    scenario = simulation.Scenario(clock_step=timing.safety_margin * 1.6)
    report = simulation.run(3, 30_000, scenario)
    assert report.counts["clock steps"] > 0
    detected = report.counts["clock steps detected"]
    assert detected >= report.counts["clock steps"] // 2, (
        f"only {detected} of {report.counts['clock steps']} detected"
    )
    assert not report.token_order and not report.machine
