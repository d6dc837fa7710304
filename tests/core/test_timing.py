"""Timing validation, and the backend clock check that guards the lease arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from returns.result import Failure, Success

from gomaster.core.decide import ClockSample, ClockStep, check_clock
from gomaster.core.timing import (
    DURATION_BOUNDS,
    MAX_DRIFT_LIMIT,
    MAX_PERIOD,
    MAX_TTL,
    MIN_PERIOD,
    MIN_TTL,
    Timing,
    TimingError,
    check_seconds,
    validate_timing,
)
from tests.core.strategies import timings

DURATIONS = ("ttl", "heartbeat", "renew_deadline", "retry", "grace")

#: Every kind of number a caller might pass: negatives, zero, nan, infinities, huge ints, and
#: values on either side of each bound.
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.0, max_value=20.0),
    st.floats(min_value=0.0, max_value=0.2),
    st.floats(min_value=MAX_TTL - 10.0, max_value=MAX_TTL + 10.0),
    st.sampled_from(
        [bound for pair in DURATION_BOUNDS.values() for bound in pair]
        + [math.nextafter(b, -math.inf) for pair in DURATION_BOUNDS.values() for b in pair]
        + [math.nextafter(b, math.inf) for pair in DURATION_BOUNDS.values() for b in pair]
    ),
    st.integers(min_value=-5, max_value=30),
    st.integers(),
    st.just(10**400),
)
drifts = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0.0, max_value=0.6))

RULE_PHRASES = {
    "finite": "must be a finite number of seconds",
    "bounds": "must be from",
    "drift": "max_drift must be",
    "heartbeat": "heartbeat < renew_deadline",
    "usable": "renew_deadline + grace < ttl * (1 - max_drift)",
}


def broken_rules(values: dict[str, float]) -> set[str]:
    """The rules these values break, worked out independently of the implementation."""
    broken: set[str] = set()
    for field in DURATIONS:
        value = values[field]
        try:
            finite = math.isfinite(value)
        except OverflowError:
            finite = False
        least, most = DURATION_BOUNDS[field]
        if not finite:
            broken.add("finite")
        elif not least <= value <= most:
            broken.add("bounds")
    drift = values["max_drift"]
    if not 0 <= drift < MAX_DRIFT_LIMIT:
        broken.add("drift")
    if broken:
        return broken
    if values["heartbeat"] >= values["renew_deadline"]:
        broken.add("heartbeat")
    if values["renew_deadline"] + values["grace"] >= values["ttl"] * (1 - drift):
        broken.add("usable")
    return broken


@given(ttl=numbers, heartbeat=numbers, renew_deadline=numbers, retry=numbers, grace=numbers, max_drift=drifts)
@example(ttl=5.0, heartbeat=1.0, renew_deadline=3.0, retry=1.0, grace=1.0, max_drift=0.01)
@example(ttl=2.0, heartbeat=0.4, renew_deadline=1.2, retry=0.4, grace=0.4, max_drift=0.01)
def test_validate_timing_and_the_constructor_give_the_same_verdict(
    ttl: float, heartbeat: float, renew_deadline: float, retry: float, grace: float, max_drift: float
) -> None:
    values = {
        "ttl": ttl,
        "heartbeat": heartbeat,
        "renew_deadline": renew_deadline,
        "retry": retry,
        "grace": grace,
        "max_drift": max_drift,
    }
    verdict = validate_timing(**values)
    try:
        built = Timing(**values)
    except ValueError as exc:
        assert isinstance(verdict, Failure), f"Timing refused {values} ({exc}) but validate_timing accepted"
        assert str(verdict.failure()) in str(exc), "the exception and the Failure name different rules"
    else:
        assert verdict == Success(built), f"Timing accepted {values} but validate_timing said {verdict}"


@given(ttl=numbers, heartbeat=numbers, renew_deadline=numbers, retry=numbers, grace=numbers, max_drift=drifts)
def test_a_refusal_names_a_rule_the_values_break(
    ttl: float, heartbeat: float, renew_deadline: float, retry: float, grace: float, max_drift: float
) -> None:
    values = {
        "ttl": ttl,
        "heartbeat": heartbeat,
        "renew_deadline": renew_deadline,
        "retry": retry,
        "grace": grace,
        "max_drift": max_drift,
    }
    broken = broken_rules(values)
    match validate_timing(**values):
        case Success(timing):
            assert not broken, f"accepted {timing} although it breaks {broken}"
        case Failure(TimingError(rule=message)):
            named = {rule for rule, phrase in RULE_PHRASES.items() if phrase in message}
            assert named, f"the message {message!r} names no rule"
            assert named <= broken, f"{message!r} names {named}, but the values break {broken}"


@given(timing=timings())
def test_every_accepted_timing_keeps_the_safety_rules(timing: Timing) -> None:
    assert timing.heartbeat < timing.renew_deadline
    assert timing.renew_deadline + timing.grace < timing.ttl * (1 - timing.max_drift)
    assert timing.safety_margin > 0


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"heartbeat": 3.0}, RULE_PHRASES["heartbeat"]),
        ({"grace": 2.0}, RULE_PHRASES["usable"]),
        ({"max_drift": 0.25, "grace": 1.5}, RULE_PHRASES["usable"]),
        ({"ttl": -5.0}, "ttl must be from 0.1 to 86400 seconds"),
        ({"retry": 0.0}, "retry must be from 0.01 to 86400 seconds"),
        ({"ttl": 1e12}, "ttl must be from 0.1 to 86400 seconds"),
        ({"renew_deadline": math.nan}, RULE_PHRASES["finite"]),
        ({"ttl": math.inf}, RULE_PHRASES["finite"]),
        ({"max_drift": 0.5}, RULE_PHRASES["drift"]),
        ({"max_drift": -0.01}, RULE_PHRASES["drift"]),
    ],
)
def test_the_value_error_names_the_broken_rule(changes: dict[str, float], phrase: str) -> None:
    with pytest.raises(ValueError, match="impossible Timing") as raised:
        Timing().replace(**changes)
    assert phrase in str(raised.value), f"{raised.value} does not say {phrase!r}"


def test_from_ttl_scales_the_defaults_in_proportion() -> None:
    timing = Timing.from_ttl(2.0)
    assert (timing.ttl, timing.heartbeat, timing.renew_deadline, timing.retry, timing.grace) == (
        2.0,
        0.4,
        1.2,
        0.4,
        0.4,
    )
    assert timing.max_drift == Timing().max_drift
    assert Timing.from_ttl(5.0) == Timing()


@given(ttl=st.floats(min_value=MIN_TTL, max_value=MAX_TTL))
def test_from_ttl_is_always_valid_and_keeps_the_proportions(ttl: float) -> None:
    timing = Timing.from_ttl(ttl)
    assert math.isclose(timing.heartbeat / ttl, 0.2)
    assert math.isclose(timing.renew_deadline / ttl, 0.6)
    assert math.isclose(timing.grace / ttl, 0.2)
    assert math.isclose(timing.safety_margin / ttl, 0.19)


#: The least accepted timing: every field at its floor, or as close as the safety rules allow.
SMALLEST = {
    "ttl": MIN_TTL,
    "heartbeat": MIN_PERIOD,
    "renew_deadline": 0.02,
    "retry": MIN_PERIOD,
    "grace": MIN_PERIOD,
}
#: The greatest accepted timing: every field at its ceiling, or as close as the rules allow.
LARGEST = {
    "ttl": MAX_TTL,
    "heartbeat": 42_000.0,
    "renew_deadline": 42_500.0,
    "retry": MAX_PERIOD,
    "grace": 43_000.0,
}
#: The most drift accepted, with a lease long enough to leave some margin.
MOST_DRIFT = {"ttl": 10.0, "max_drift": math.nextafter(MAX_DRIFT_LIMIT, 0.0)}


@pytest.mark.parametrize(
    "values", [SMALLEST, LARGEST, MOST_DRIFT, {"ttl": MIN_TTL}, {"ttl": MAX_TTL}], ids=str
)
def test_the_smallest_and_largest_accepted_timings_construct(values: dict[str, float]) -> None:
    if set(values) == {"ttl"}:
        built = Timing.from_ttl(values["ttl"])
    else:
        built = Timing(**values)
    assert validate_timing(**{f: getattr(built, f) for f in (*DURATIONS, "max_drift")}) == Success(built)
    assert built.safety_margin > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl", math.nextafter(MIN_TTL, 0.0)),
        ("ttl", math.nextafter(MAX_TTL, math.inf)),
        ("ttl", 1e-9),
        ("ttl", 1e300),
        ("heartbeat", math.nextafter(MIN_PERIOD, 0.0)),
        ("retry", math.nextafter(MIN_PERIOD, 0.0)),
        ("retry", math.nextafter(MAX_PERIOD, math.inf)),
        ("grace", math.nextafter(MIN_PERIOD, 0.0)),
        ("renew_deadline", math.nextafter(MAX_PERIOD, math.inf)),
    ],
)
def test_a_duration_just_outside_its_bounds_is_refused_naming_the_bounds(field: str, value: float) -> None:
    least, most = DURATION_BOUNDS[field]
    base = SMALLEST if value < least else LARGEST
    values = {**base, field: value}
    rule = f"{field} must be from {least:g} to {most:g} seconds, got {value!r}"
    with pytest.raises(ValueError, match="impossible Timing") as raised:
        Timing(**values)
    assert rule in str(raised.value)
    assert validate_timing(**values) == Failure(TimingError(rule))


@pytest.mark.parametrize("field", DURATIONS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 0.0, 10**400], ids=repr)
def test_nan_infinite_negative_and_zero_durations_are_refused(field: str, value: float) -> None:
    match validate_timing(**{**SMALLEST, field: value}):
        case Failure(TimingError(rule=rule)):
            assert rule.startswith(f"{field} must be"), rule
        case Success(timing):
            pytest.fail(f"{field}={value!r} was accepted: {timing}")


@pytest.mark.parametrize("ttl", [1e300, 1e12, 10**400, math.inf, math.nan, 1e-9, -1.0])
def test_from_ttl_refuses_a_ttl_out_of_bounds_with_a_value_error_not_an_overflow(ttl: float) -> None:
    with pytest.raises(ValueError, match=r"impossible Timing: ttl must be"):
        Timing.from_ttl(ttl)


def test_check_seconds_accepts_its_bounds_and_names_them_otherwise() -> None:
    assert check_seconds("--timeout", 1, 1.0, 2.0) == Success(1.0)
    assert check_seconds("--timeout", 2.0, 1.0, 2.0) == Success(2.0)
    assert check_seconds("--timeout", 2.5, 1.0, 2.0) == Failure(
        TimingError("--timeout must be from 1 to 2 seconds, got 2.5")
    )
    assert check_seconds("--timeout", True, 0.0, 2.0) == Failure(
        TimingError("--timeout must be a finite number of seconds, got True")
    )


def test_replace_validates_and_refuses_unknown_fields() -> None:
    assert Timing().replace(grace=0.5).grace == 0.5
    with pytest.raises(ValueError, match="heartbeat < renew_deadline"):
        Timing().replace(heartbeat=3.5)
    with pytest.raises(TypeError, match="unknown Timing fields: lease"):
        Timing().replace(lease=1.0)


def test_the_safety_margin_is_what_is_left_of_the_lease() -> None:
    assert math.isclose(Timing().safety_margin, 5.0 * 0.99 - 3.0 - 1.0)


# ---- check_clock ---------------------------------------------------------------------------


@st.composite
def clean_reads(draw: st.DrawFn, timing: Timing) -> tuple[ClockSample, ClockSample]:
    """Two reads of a backend whose clock has not stepped, by a node whose rate is within drift.

    Real time runs from 0; the node's clock reads ``offset + rate * real``; the backend reads
    ``base + real`` at an arbitrary instant inside each round trip.
    """
    drift = timing.max_drift
    rate = draw(st.sampled_from((1 - drift, 1 + drift)) | st.floats(min_value=1 - drift, max_value=1 + drift))
    offset = draw(st.floats(min_value=-1e6, max_value=1e6))
    base = draw(st.floats(min_value=1.6e9, max_value=1.8e9))
    first_send = draw(st.floats(min_value=0.0, max_value=1e3))
    first_rtt = draw(st.floats(min_value=0.0, max_value=timing.renew_deadline))
    gap = draw(st.floats(min_value=0.0, max_value=1e6))
    second_rtt = draw(st.floats(min_value=0.0, max_value=timing.renew_deadline))
    first_read = first_send + draw(st.floats(min_value=0.0, max_value=1.0)) * first_rtt
    second_send = first_send + first_rtt + gap
    second_read = second_send + draw(st.floats(min_value=0.0, max_value=1.0)) * second_rtt

    def local(real: float) -> float:
        return offset + rate * real

    before = ClockSample(
        local(first_send), local(first_send + first_rtt) - local(first_send), base + first_read
    )
    after = ClockSample(
        local(second_send), local(second_send + second_rtt) - local(second_send), base + second_read
    )
    return before, after


@given(data=st.data(), timing=timings())
@example(data=None, timing=Timing(max_drift=0.45, ttl=100.0, heartbeat=1.0, renew_deadline=2.0, grace=1.0))
def test_check_clock_never_flags_drift_within_max_drift(data: st.DataObject | None, timing: Timing) -> None:
    if data is None:
        # A day between two reads by a node running 45 % slow, with no clock step at all.
        day = 86_400.0
        before = ClockSample(0.0, 0.0, 1.7e9)
        after = ClockSample(day * 0.55, 0.0, 1.7e9 + day)
    else:
        before, after = data.draw(clean_reads(timing))
    assert check_clock(before, after, timing) == Success(after), "an honest clock was taken for a step"


@given(
    timing=timings(),
    gap=st.floats(min_value=0.0, max_value=1e4),
    rtts=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
    beyond=st.floats(min_value=1e-3, max_value=1e6),
    forward=st.booleans(),
)
def test_check_clock_flags_a_step_larger_than_the_margin(
    timing: Timing, gap: float, rtts: tuple[float, float], beyond: float, forward: bool
) -> None:
    first_rtt, second_rtt = rtts
    drift = timing.max_drift
    before = ClockSample(100.0, first_rtt, 1.7e9)
    after_sent = 100.0 + first_rtt + gap
    assume(after_sent > before.sent_at)
    # Our clock advanced between gap and gap + both round trips between the two reads; at a
    # rate within drift, an honest backend advanced inside this window.
    slowest = gap / (1 + drift)
    fastest = (gap + first_rtt + second_rtt) / (1 - drift)
    if forward:
        advanced = fastest + timing.safety_margin + beyond
    else:
        advanced = slowest - timing.safety_margin - beyond
    after = ClockSample(after_sent, second_rtt, 1.7e9 + advanced)
    match check_clock(before, after, timing):
        case Failure(ClockStep(jump=jump)):
            assert (jump > 0) == forward, f"a {'forward' if forward else 'backward'} step reported as {jump}"
        case Success(_):
            pytest.fail(
                f"the backend advanced {advanced:.3f} s against {slowest:.3f}..{fastest:.3f} s "
                f"honest, beyond a margin of {timing.safety_margin:.3f} s, and went unnoticed"
            )


def test_check_clock_accepts_the_first_read_and_reads_out_of_order() -> None:
    timing = Timing()
    sample = ClockSample(10.0, 0.01, 1.7e9)
    assert check_clock(None, sample, timing) == Success(sample)
    earlier = ClockSample(9.0, 0.01, 1.0)
    assert check_clock(sample, earlier, timing) == Success(earlier)


def test_a_clock_step_describes_its_direction() -> None:
    assert str(ClockStep(2.5)) == "backend clock stepped forward by 2.500 s"
    assert str(ClockStep(-0.25)) == "backend clock stepped back by 0.250 s"
