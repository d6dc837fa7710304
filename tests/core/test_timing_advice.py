"""An impossible ``Timing`` says which rule it breaks, with which values, and how to fix it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from gomaster.core.timing import DEFAULT_TTL, MAX_TTL, MIN_TTL, Timing, TimingError, validate_timing

#: Every ttl that the other defaults (made for a 5 s lease) do not fit.
SHORT_TTLS = st.floats(min_value=MIN_TTL, max_value=DEFAULT_TTL * 0.8, allow_nan=False)


def _refusal(**fields: float) -> str:
    with pytest.raises(ValueError, match="impossible Timing") as raised:
        Timing(**fields)
    return str(raised.value)


def test_a_short_ttl_alone_names_the_rule_the_values_and_points_at_from_ttl() -> None:
    message = _refusal(ttl=1)
    assert "renew_deadline + grace < ttl * (1 - max_drift)" in message
    assert "renew_deadline 3.0 + grace 1.0 = 4" in message, message
    assert "ttl 1 * (1 - max_drift 0.01) = 0.99" in message, message
    assert "Timing.from_ttl(1) scales every default to that ttl" in message, message


@given(ttl=SHORT_TTLS)
def test_the_from_ttl_a_refusal_suggests_is_a_valid_timing(ttl: float) -> None:
    message = _refusal(ttl=ttl)
    assert f"Timing.from_ttl({ttl!r})" in message, message
    assert Timing.from_ttl(ttl).ttl == ttl


def test_a_ttl_the_refusal_names_is_long_enough() -> None:
    message = _refusal(grace=2.0)
    found = re.search(r"make ttl more than ([0-9.]+)", message)
    assert found is not None, message
    Timing(grace=2.0, ttl=float(found.group(1)) * 1.000001)


def test_with_the_default_ttl_the_refusal_does_not_suggest_scaling_it() -> None:
    message = _refusal(heartbeat=3.0)
    assert "heartbeat is 3.0 and renew_deadline 3.0" in message, message
    assert "make heartbeat less than renew_deadline 3.0" in message, message
    assert "from_ttl" not in message, message


def test_a_drift_of_ones_own_is_kept_in_the_suggestion() -> None:
    message = _refusal(ttl=2.0, max_drift=0.1)
    assert "Timing.from_ttl(2.0).replace(max_drift=0.1)" in message, message
    Timing.from_ttl(2.0).replace(max_drift=0.1)


def test_validate_timing_carries_the_same_rule_and_fix() -> None:
    verdict = validate_timing(ttl=1.0)
    assert isinstance(verdict, Failure)
    problem: TimingError = verdict.failure()
    assert problem.rule.startswith("renew_deadline + grace < ttl * (1 - max_drift) is required")
    assert "Timing.from_ttl(1.0)" in problem.fix
    assert str(problem) in _refusal(ttl=1.0)


def test_a_value_out_of_bounds_needs_no_fix_beyond_its_range() -> None:
    verdict = validate_timing(ttl=MAX_TTL * 2)
    assert isinstance(verdict, Failure)
    assert verdict.failure().fix == ""
