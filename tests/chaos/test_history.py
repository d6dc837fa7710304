"""The checker's fault-aware functions on hand-written witness logs."""

from __future__ import annotations

import pytest

from gomaster.testing import Freeze, judge, longest_gap


def _marks(token: int, node: str, *times: float) -> list[dict[str, object]]:
    first, *rest = times
    return [{"event": "start", "token": token, "node": node, "t": first}] + [
        {"event": "alive", "token": token, "node": node, "t": at} for at in rest
    ]


def test_a_clean_handover_has_no_overlap_no_regression_and_nothing_stale() -> None:
    log = _marks(1, "a", 0.0, 0.05, 0.10) + _marks(2, "b", 1.2, 1.25)
    verdict = judge(log)
    assert verdict.overlaps == [] and verdict.regressions == [] and verdict.stale == []
    assert [t.token for t in verdict.tenures] == [1, 2]


def test_old_marks_after_the_new_tenure_began_are_an_overlap_without_a_freeze() -> None:
    log = _marks(1, "a", 0.0, 0.5, 1.3) + _marks(2, "b", 1.2, 1.25)
    verdict = judge(log)
    assert [(o.older, o.newer) for o in verdict.overlaps] == [(1, 2)]
    assert verdict.overlaps[0].seconds == pytest.approx(0.1)
    assert verdict.stale == []


def test_marks_of_a_frozen_master_after_it_resumed_are_stale_not_an_overlap() -> None:
    log = _marks(1, "a", 0.0, 0.05, 2.01, 2.06) + _marks(2, "b", 1.2, 1.25, 2.1)
    verdict = judge(log, [Freeze("a", stopped=0.06, resumed=2.0)])
    assert verdict.overlaps == []
    (stale,) = verdict.stale
    assert (stale.older, stale.newer, stale.node, stale.marks) == (1, 2, "a", 2)
    assert stale.window == pytest.approx(0.06)
    assert 2.01 not in verdict.witness and 2.1 in verdict.witness


def test_a_mark_while_supposedly_frozen_means_something_escaped_the_freeze() -> None:
    log = _marks(1, "a", 0.0, 1.5) + _marks(2, "b", 1.2, 1.25)
    verdict = judge(log, [Freeze("a", stopped=0.06, resumed=2.0)])
    assert [(o.older, o.newer) for o in verdict.overlaps] == [(1, 2)]
    assert verdict.stale == []


def test_a_freeze_of_another_node_excuses_nothing() -> None:
    log = _marks(1, "a", 0.0, 2.01) + _marks(2, "b", 1.2, 1.25)
    assert judge(log, [Freeze("c", stopped=0.0, resumed=2.0)]).overlaps != []


def test_a_token_that_starts_after_a_greater_one_is_a_regression() -> None:
    log = _marks(5, "a", 0.0, 0.1) + _marks(4, "b", 1.0, 1.1)
    assert judge(log).regressions == [(5, 4)]


def test_longest_gap_counts_from_the_start_of_the_window_to_its_end() -> None:
    witness = [0.0, 0.05, 0.1, 1.0, 1.05]
    assert longest_gap(witness, 0.1, 1.05) == pytest.approx(0.9)
    assert longest_gap(witness, 0.5, 1.05) == pytest.approx(0.5)
    assert longest_gap(witness, 1.0, 2.0) == pytest.approx(0.95)
    assert longest_gap([], 0.0, 3.0) == pytest.approx(3.0)
