"""The schedule's run ledger on every backend: columns of the lock record that only a live lease
may write, compared and set with the lease, kept by every other step."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gomaster.backends import LockBackend, connect
from gomaster.backends.memory import MemoryBackend
from gomaster.core.decide import Claim, plan_acquire
from gomaster.core.record import EMPTY_LEDGER, LockRecord, MalformedRecord, NodeIdentity
from gomaster.core.schedule import Every, latest_tick
from gomaster.core.timing import Timing
from tests.backends.conftest import BackendCase
from tests.helpers import identity, ok, result

TIMEOUT = 5.0
TTL = 5.0
#: Ticks of every shape a schedule makes: whole seconds (cron), a millisecond period, a
#: period that is no binary fraction.
TICKS: tuple[float, float, float] = (1_764_921_600.0, 1_764_921_600.125, 1_764_921_600.3)


def test_a_tick_of_a_period_that_is_no_binary_fraction_is_a_whole_millisecond() -> None:
    tick = latest_tick(Every(0.3), 1_764_921_600.4)
    assert tick == TICKS[2] and round(tick * 1000) == tick * 1000


def _acquire(backend: LockBackend, name: str, me: NodeIdentity | None = None) -> LockRecord:
    me = me or identity()
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, me, Timing.from_ttl(TTL)).unwrap()
    claim = Claim(name=name, node=me, token=planned.token, expected=planned.expected, ttl=TTL)
    return ok(backend.claim(claim, TIMEOUT))


def _seen(backend: LockBackend, name: str) -> LockRecord:
    record = ok(backend.observe(name, TIMEOUT)).record
    assert record is not None
    return record


def _spoiled(case: BackendCase, made: LockBackend, name: str, spoil: Callable[[Any, Any, str], None]) -> None:
    assert case.url is not None or isinstance(made, MemoryBackend)
    with case.traits.raw(case.url or "", made) as raw:
        spoil(raw, made, name)


def test_a_new_record_has_an_empty_ledger(backend: LockBackend, lock_name: str) -> None:
    assert _acquire(backend, lock_name).ledger == EMPTY_LEDGER
    assert _seen(backend, lock_name).ledger == EMPTY_LEDGER


def test_a_tenure_starts_a_tick_once_and_the_ledger_shows_it_exactly(
    backend: LockBackend, lock_name: str
) -> None:
    record = _acquire(backend, lock_name)
    for tick in TICKS:
        assert ok(backend.start_run(record, tick, TIMEOUT)) is True
        # The same view of the ledger again: someone (this tenure) started a run since.
        assert ok(backend.start_run(record, tick + 1, TIMEOUT)) is False
        record = _seen(backend, lock_name)
        assert record.ledger.started == tick, "a tick must come back exactly as it was written"
        assert record.ledger.token == record.token
        assert record.ledger.unfinished


def test_a_finished_run_is_recorded_with_its_outcome(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name)
    tick = TICKS[1]
    assert ok(backend.start_run(record, tick, TIMEOUT))
    assert ok(backend.finish_run(record, tick, False, TIMEOUT)) is True
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.finished, ledger.ok, ledger.unfinished) == (tick, tick, False, False)
    record = _seen(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[2], TIMEOUT))
    assert ok(backend.finish_run(record, TICKS[2], True, TIMEOUT))
    assert _seen(backend, lock_name).ledger.ok is True


def test_the_end_of_a_run_this_tenure_did_not_start_is_refused(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name)
    assert ok(backend.finish_run(record, TICKS[0], True, TIMEOUT)) is False
    assert ok(backend.start_run(record, TICKS[0], TIMEOUT))
    assert ok(backend.finish_run(record, TICKS[1], True, TIMEOUT)) is False
    assert _seen(backend, lock_name).ledger.unfinished


def test_an_expired_lease_records_nothing_even_before_anyone_claims(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[0], TIMEOUT))
    started = _seen(backend, lock_name)
    _spoiled(case, backend, lock_name, case.traits.expire_now)
    assert ok(backend.finish_run(started, TICKS[0], True, TIMEOUT)) is False
    assert ok(backend.start_run(started, TICKS[1], TIMEOUT)) is False
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.unfinished) == (TICKS[0], True)


def test_a_released_or_revoked_lease_records_nothing(backend: LockBackend, lock_name: str) -> None:
    """Not even by a caller that passes the released record itself (holder "")."""
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[0], TIMEOUT))
    started = _seen(backend, lock_name)
    assert ok(backend.revoke(started, TIMEOUT))
    revoked = _seen(backend, lock_name)
    assert revoked.released and not revoked.claimable_at(revoked.renewed_at)  # the expiry stays
    for caller in (started, revoked):
        assert ok(backend.finish_run(caller, TICKS[0], True, TIMEOUT)) is False
        assert ok(backend.start_run(caller, TICKS[1], TIMEOUT)) is False
    assert _seen(backend, lock_name).ledger == started.ledger


def test_a_demoted_master_records_nothing_and_its_successor_sees_its_run_cut_short(
    case: BackendCase, backend: LockBackend, lock_name: str
) -> None:
    first = _acquire(backend, lock_name)
    assert ok(backend.start_run(first, TICKS[0], TIMEOUT))
    started = _seen(backend, lock_name)
    _spoiled(case, backend, lock_name, case.traits.expire_now)
    second = _acquire(backend, lock_name)
    assert second.token == first.token + 1
    assert (second.ledger.started, second.ledger.token, second.ledger.unfinished) == (
        TICKS[0],
        first.token,
        True,
    )
    assert ok(backend.finish_run(started, TICKS[0], True, TIMEOUT)) is False
    assert ok(backend.start_run(started, TICKS[1], TIMEOUT)) is False
    # The successor may run the same tick again (a policy's choice) or the next one.
    assert ok(backend.start_run(second, TICKS[0], TIMEOUT))
    assert _seen(backend, lock_name).ledger.token == second.token


def test_renewal_release_and_the_next_claim_keep_the_ledger(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[2], TIMEOUT))
    assert ok(backend.finish_run(record, TICKS[2], True, TIMEOUT))
    ledger = _seen(backend, lock_name).ledger
    assert ok(backend.renew(record, TTL, TIMEOUT)).ledger == ledger
    assert ok(backend.renew_many([record], TTL, TIMEOUT))[lock_name].unwrap().ledger == ledger
    assert ok(backend.release(record, TIMEOUT))
    assert _seen(backend, lock_name).ledger == ledger
    again = _acquire(backend, lock_name)
    assert again.ledger == ledger
    assert ok(backend.observe_many([lock_name], TIMEOUT))[lock_name].unwrap().record == again


def test_the_schedule_that_started_a_run_is_kept_and_read_back(backend: LockBackend, lock_name: str) -> None:
    """Stored with the start, kept by every other step, replaced by the next start (even by "")."""
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[0], TIMEOUT, schedule="every 1000ms")) is True
    assert _seen(backend, lock_name).ledger.schedule == "every 1000ms"
    assert ok(backend.finish_run(record, TICKS[0], True, TIMEOUT)) is True
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.schedule, ledger.finished, ledger.ok) == ("every 1000ms", TICKS[0], True)
    assert ok(backend.renew(record, TTL, TIMEOUT)).ledger == ledger
    assert ok(backend.renew_many([record], TTL, TIMEOUT))[lock_name].unwrap().ledger == ledger
    assert ok(backend.release(record, TIMEOUT))
    assert _seen(backend, lock_name).ledger == ledger
    again = _acquire(backend, lock_name)
    assert again.ledger == ledger
    assert ok(backend.observe_many([lock_name], TIMEOUT))[lock_name].unwrap().record == again
    assert ok(backend.start_run(again, TICKS[1], TIMEOUT, schedule="")) is True
    ledger = _seen(backend, lock_name).ledger
    assert (ledger.started, ledger.token, ledger.schedule) == (TICKS[1], again.token, "")


def test_a_ledger_seen_before_the_last_start_cannot_start_another_run(
    backend: LockBackend, lock_name: str
) -> None:
    """The compare covers the whole ledger: a stale view of a finished run is refused too."""
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[0], TIMEOUT))
    started = _seen(backend, lock_name)
    assert ok(backend.finish_run(started, TICKS[0], True, TIMEOUT))
    assert ok(backend.start_run(started, TICKS[1], TIMEOUT)) is False
    assert ok(backend.start_run(_seen(backend, lock_name), TICKS[1], TIMEOUT))


def test_a_corrupted_ledger_is_malformed_and_repair_counts_the_present_as_run(
    shared_case: BackendCase, lock_name: str
) -> None:
    """Every store but memory, whose typed records cannot hold garbage. Repair prefers a tick
    not run to a tick run twice: the ledger becomes "a run of now, finished"."""
    made = shared_case.make()
    record = _acquire(made, lock_name)
    assert ok(made.start_run(record, TICKS[0], TIMEOUT))
    _spoiled(shared_case, made, lock_name, shared_case.traits.corrupt_ledger)
    assert isinstance(result(made.observe(lock_name, TIMEOUT)).failure(), MalformedRecord)
    before = time.time()
    assert ok(made.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    ledger = _seen(made, lock_name).ledger
    assert ledger.started is not None and abs(ledger.started - before) < 60
    assert ledger.finished == ledger.started and not ledger.unfinished
    assert _acquire(made, lock_name).token == record.token + 1
    made.close()


def test_a_valid_ledger_survives_repair(backend: LockBackend, lock_name: str) -> None:
    record = _acquire(backend, lock_name)
    assert ok(backend.start_run(record, TICKS[1], TIMEOUT))
    ledger = _seen(backend, lock_name).ledger
    assert ok(backend.repair(lock_name, 0.0, 0, TIMEOUT)) == record.token
    assert _seen(backend, lock_name).ledger == ledger


def test_a_lock_table_of_an_earlier_gomaster_gains_the_ledger_when_a_node_connects(
    sql_case: BackendCase, lock_name: str
) -> None:
    assert sql_case.url is not None
    url = sql_case.traits.apart(sql_case.url, f"old_{uuid.uuid4().hex[:8]}")  # a table of its own
    made = connect(url)
    record = _acquire(made, lock_name)
    made.close()
    with sql_case.traits.raw(url, made) as raw:
        sql_case.traits.drop_ledger(raw, made)
    later = connect(url)  # a new process's backend: it checks the table when it connects
    old = _seen(later, lock_name)
    assert old.ledger == EMPTY_LEDGER
    assert replace(old, ledger=record.ledger) == record
    assert ok(later.start_run(old, TICKS[0], TIMEOUT))
    assert _seen(later, lock_name).ledger.started == TICKS[0]
    later.close()
