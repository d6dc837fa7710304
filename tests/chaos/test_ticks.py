"""The chaos judge of scheduled names, on histories written by hand."""

from __future__ import annotations

from tests.chaos.ticks import judge_ticks

PERIOD, WINDOW = 1.0, 1.2


def _held(token: int, start: float, end: float, every: float = 0.05) -> list[dict[str, object]]:
    """A tenure's witness marks from ``start`` to ``end``."""
    count = round((end - start) / every)
    return [{"event": "alive", "token": token, "wall": start + k * every} for k in range(count + 1)]


def _run(tick: float, token: int) -> dict[str, object]:
    return {"event": "run", "tick": tick, "token": token, "wall": tick + 0.01}


def test_a_clean_history_counts_its_ticks_and_nothing_else() -> None:
    witness = _held(1, 99.5, 110.0)
    verdict = judge_ticks([_run(100.0 + k, 1) for k in range(9)], witness, period=PERIOD, window=WINDOW)
    assert (verdict.ticks, verdict.runs) == (9, 9)
    assert verdict.duplicates == verdict.missed == verdict.uncoalesced == []
    assert verdict.demoted_writes == []


def test_a_tick_run_twice_is_a_duplicate() -> None:
    runs = [_run(100.0, 1), _run(101.0, 1), _run(101.0, 2), _run(102.0, 2)]
    verdict = judge_ticks(runs, _held(1, 99.5, 101.5) + _held(2, 101.6, 104.0), period=PERIOD, window=WINDOW)
    assert verdict.duplicates == [101.0]


def test_a_tick_held_throughout_without_a_run_is_missed_and_uncoalesced_when_nothing_later_ran() -> None:
    runs = [_run(100.0, 1), _run(102.0, 1), _run(103.0, 1), _run(106.0, 1), _run(107.0, 1)]
    verdict = judge_ticks(runs, _held(1, 99.5, 108.5), period=PERIOD, window=WINDOW)
    assert verdict.missed == [101.0, 104.0, 105.0]
    # 101 folded into 102 (within its window); 104 has nothing within 1.2 s; 105 folded into 106.
    assert verdict.uncoalesced == [104.0]


def test_a_tick_in_a_failover_or_a_pause_of_the_witness_is_not_missed() -> None:
    witness = _held(1, 99.5, 101.5) + _held(2, 103.0, 105.5) + _held(2, 106.0, 110.0)
    runs = [
        _run(100.0, 1),
        _run(101.0, 1),
        _run(103.0, 2),
        _run(104.0, 2),
        _run(106.0, 2),
        _run(107.0, 2),
        _run(108.0, 2),
    ]
    verdict = judge_ticks(runs, witness, period=PERIOD, window=WINDOW)
    assert verdict.missed == [], "102 fell in the failover, 105 in a 0.5 s pause of the witness"


def test_a_lower_token_after_a_higher_one_in_tick_order_is_a_demoted_write() -> None:
    runs = [_run(100.0, 1), _run(101.0, 2), _run(102.0, 1), _run(103.0, 2)]
    verdict = judge_ticks(runs, _held(1, 99.5, 100.5) + _held(2, 100.6, 104.0), period=PERIOD, window=WINDOW)
    assert verdict.demoted_writes == [(102.0, 1)]
