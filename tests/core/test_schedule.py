"""Schedules: ticks on the backend's clock, DST as Debian's cron has it, and the tick a master
runs, judged with plain values and a seeded simulation of tenures and runs."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gomaster.core.schedule import (
    Cron,
    Every,
    Ledger,
    Policy,
    RunTick,
    WaitUntil,
    cron,
    due,
    every,
    latest_tick,
    next_tick,
    parse_duration,
)

#: 2026-01-01 to 2027-12-31 on the epoch clock: two springs forward and two falls back.
INSTANTS = st.floats(min_value=1_767_225_600.0, max_value=1_830_297_600.0, allow_nan=False)
PARIS_DAILY = Cron("30 2 * * *", "Europe/Paris")


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# -- reading what users write ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (300, 300.0),
        ("300", 300.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1d", 86_400.0),
        ("250ms", 0.25),
    ],
)
def test_a_duration_is_seconds_or_units(written: str | float, seconds: float) -> None:
    assert parse_duration(written).unwrap() == seconds


@pytest.mark.parametrize("written", ["", "5 minutes", "m5", "1x", "-5m", "0", "nan", "inf", "5m3"])
def test_a_bad_duration_is_refused_with_the_forms_that_work(written: str) -> None:
    message = parse_duration(written).failure()
    assert repr(written) in message and "5m" in message


def test_a_period_shorter_than_the_heartbeat_is_refused_naming_both() -> None:
    message = every("500ms", shortest=1.0).failure()
    assert "'500ms'" in message and "heartbeat (1 s)" in message
    assert every("1s", shortest=1.0).unwrap() == Every(1.0)


def test_a_bad_cron_expression_or_zone_is_refused_with_the_fix() -> None:
    assert "five fields" in cron("61 * * * *").failure()
    assert "five fields" in cron("not cron").failure()
    assert "IANA name" in cron("0 3 * * *", "Mars/Olympus").failure()
    assert cron("0 3 * * *", "Europe/Paris").unwrap() == Cron("0 3 * * *", "Europe/Paris")


# -- ticks ------------------------------------------------------------------------------------


@given(INSTANTS, st.sampled_from([1.0, 7.5, 300.0, 3600.0, 86_400.0]))
def test_a_period_ticks_at_its_multiples_since_the_epoch(at: float, period: float) -> None:
    schedule = Every(period)
    latest, later = latest_tick(schedule, at), next_tick(schedule, at)
    assert latest is not None and later is not None
    assert latest <= at < later and later - latest == pytest.approx(period)
    assert math.isclose(latest / period, round(latest / period), abs_tol=1e-9)


@given(INSTANTS, st.sampled_from(["30 2 * * *", "0 * * * *", "*/20 1-3 * * 0", "15 3 1 * *"]))
def test_cron_ticks_have_no_tick_between_the_latest_and_the_next(at: float, expression: str) -> None:
    schedule = Cron(expression, "Europe/Paris")
    latest, later = latest_tick(schedule, at), next_tick(schedule, at)
    assert latest is not None and later is not None
    assert latest <= at < later
    assert next_tick(schedule, latest) == later or latest == at  # nothing between them
    assert latest_tick(schedule, later) == later


def test_a_daily_tick_that_spring_forward_skips_runs_just_after_the_jump() -> None:
    # Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
    assert next_tick(PARIS_DAILY, _utc("2026-03-28T12:00:00")) == _utc("2026-03-29T01:00:00")
    assert next_tick(PARIS_DAILY, _utc("2026-03-29T01:00:00")) == _utc("2026-03-30T00:30:00")


def test_a_daily_tick_that_fall_back_repeats_runs_once_and_an_hourly_one_twice() -> None:
    # Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:00-03:00 comes twice.
    first = next_tick(PARIS_DAILY, _utc("2026-10-24T12:00:00"))
    assert first == _utc("2026-10-25T00:30:00")  # 02:30 CEST, the first 02:30
    assert next_tick(PARIS_DAILY, first) == _utc("2026-10-26T01:30:00")  # not 02:30 CET again
    hourly = Cron("0 * * * *", "Europe/Paris")
    ticks = [_utc("2026-10-24T23:00:00")]
    for _ in range(3):
        found = next_tick(hourly, ticks[-1])
        assert found is not None
        ticks.append(found)
    assert ticks[1:] == [
        _utc("2026-10-25T00:00:00"),
        _utc("2026-10-25T01:00:00"),
        _utc("2026-10-25T02:00:00"),
    ]


# -- the decision -----------------------------------------------------------------------------

PERIOD = Every(10.0)
LATE = 3.0


def test_the_latest_tick_runs_when_nobody_started_it() -> None:
    assert due(PERIOD, Policy(), Ledger(started=90.0, finished=90.0), 100.5, late_after=LATE) == RunTick(
        100.0
    )


def test_a_started_and_finished_tick_waits_for_the_next() -> None:
    ledger = Ledger(started=100.0, token=3, finished=100.0)
    assert due(PERIOD, Policy(), ledger, 104.0, late_after=LATE) == WaitUntil(110.0)


def test_a_tick_due_during_a_failover_runs_on_the_new_master_under_either_policy() -> None:
    for missed in ("latest", "skip"):
        decided = due(
            PERIOD, Policy(missed=missed), Ledger(started=90.0, finished=90.0), 102.5, late_after=LATE
        )
        assert decided == RunTick(100.0)


def test_ticks_missed_while_nobody_was_master_run_the_latest_once_or_are_skipped() -> None:
    ledger = Ledger(started=20.0, finished=20.0)
    assert due(PERIOD, Policy(missed="latest"), ledger, 104.0, late_after=LATE) == RunTick(100.0)
    assert due(PERIOD, Policy(missed="skip"), ledger, 104.0, late_after=LATE) == WaitUntil(
        110.0, skipped=100.0
    )


def test_a_run_cut_short_counts_done_by_default_or_runs_again_when_asked() -> None:
    ledger = Ledger(started=100.0, token=4, finished=90.0)
    assert ledger.unfinished
    assert due(PERIOD, Policy(), ledger, 101.0, late_after=LATE) == WaitUntil(110.0)
    assert due(PERIOD, Policy(cut_short="rerun"), ledger, 101.0, late_after=LATE) == RunTick(100.0)
    # A newer tick than the cut-short one wins either way.
    assert due(PERIOD, Policy(cut_short="rerun"), ledger, 111.0, late_after=LATE) == RunTick(110.0)


def test_a_tick_that_came_while_this_node_was_busy_waits_for_the_run_or_is_skipped() -> None:
    ledger = Ledger(started=100.0, token=4, finished=100.0)
    assert due(PERIOD, Policy(busy="wait"), ledger, 125.0, late_after=LATE, busy_until=125.0) == RunTick(
        120.0
    )
    assert due(PERIOD, Policy(busy="skip"), ledger, 125.0, late_after=LATE, busy_until=125.0) == WaitUntil(
        130.0, skipped=120.0
    )


# -- a simulation: tenures that come and go, runs of random length ------------------------------


def _simulate(seed: int, policy: Policy) -> tuple[list[float], list[float]]:
    """Tenures with failovers between them and runs of random length, deciding with :func:`due`
    at every step while no run is going: the ticks started, in order, and the ticks a master
    sat idle on (no run going, and the latest tick never started)."""
    rng = random.Random(seed)
    step, schedule = 0.05, Every(1.0)
    ledger, started, idle_on = Ledger(), list[float](), list[float]()
    now = 0.0
    while now < 200.0:
        tenure_end, token = now + rng.uniform(0.2, 8.0), ledger.token + 1
        busy_until: float | None = None
        running: tuple[float, float] | None = None  # (tick, ends at)
        while now < tenure_end:
            if running is not None and now >= running[1]:
                ledger = Ledger(started=ledger.started, token=ledger.token, finished=running[0])
                busy_until, running = now, None
            if running is None:
                decided = due(schedule, policy, ledger, now, late_after=0.6, busy_until=busy_until)
                if isinstance(decided, RunTick):
                    started.append(decided.tick)
                    ledger = Ledger(started=decided.tick, token=token, finished=ledger.finished)
                    running = (decided.tick, now + rng.choice([0.1, 0.3, rng.uniform(0.1, 2.5)]))
            if running is None and latest_tick(schedule, now) not in started:
                idle_on.append(now)
            now = round(now + step, 10)
        now = round(now + rng.choice([0.0, 0.3, rng.uniform(0.5, 4.0)]), 10)  # a failover
    return started, idle_on


@pytest.mark.parametrize("seed", range(20))
def test_with_the_default_policy_no_tick_starts_twice_and_no_master_sits_idle_on_a_tick(seed: int) -> None:
    started, idle_on = _simulate(seed, Policy())
    assert len(started) == len(set(started)), "a tick started twice"
    assert started == sorted(started), "an older tick started after a newer one"
    assert not idle_on, f"a master with no run going left the latest tick unrun at {idle_on[:5]}"
    assert len(started) > 50


@pytest.mark.parametrize("seed", range(5))
def test_skipping_leaves_masters_idle_on_skipped_ticks_only_and_rerun_repeats_cut_short_ones(
    seed: int,
) -> None:
    started, idle_on = _simulate(seed, Policy(missed="skip", busy="skip"))
    assert len(started) == len(set(started)) and started == sorted(started)
    assert idle_on, "nothing was ever skipped: the simulation does not exercise the policy"
    started, idle_on = _simulate(seed, Policy(cut_short="rerun"))
    assert started == sorted(started) and not idle_on
    assert len(started) > len(set(started)), "no cut-short run was run again"


def test_an_instant_a_hair_before_a_cron_tick_is_still_before_it() -> None:
    """``datetime.fromtimestamp`` would round it onto the tick (found by hypothesis)."""
    hourly, tick = Cron("0 * * * *", "Europe/Paris"), 1_830_297_600.0
    hair = 1_830_297_599.9999998
    assert latest_tick(hourly, hair) == tick - 3600
    assert next_tick(hourly, hair) == tick


def test_a_cron_expression_too_long_for_the_ledger_is_refused_saying_so() -> None:
    assert "longer than" in cron(",".join(["1"] * 200) + " * * * *").failure()
