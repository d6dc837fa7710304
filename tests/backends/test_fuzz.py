"""Hypothesis against real backends: any accepted lock name round-trips, no input crashes a step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from gomaster.backends import LockBackend, connect, parse_backend
from gomaster.core.decide import Claim
from gomaster.core.record import MAX_NAME_LENGTH, MalformedRecord, check_name
from tests.helpers import identity, ok, result

TIMEOUT = 5.0
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

names = st.text(min_size=1, max_size=MAX_NAME_LENGTH).filter(lambda n: isinstance(check_name(n), Success))


@FUZZ
@given(name=names)
def test_any_accepted_lock_name_round_trips_through_the_backend(
    backend: LockBackend, lock_name: str, name: str
) -> None:
    full = f"{lock_name}:{name}"[:MAX_NAME_LENGTH]
    if isinstance(check_name(full), Failure):
        return
    seen = ok(backend.observe(full, TIMEOUT))
    if seen.record is None:
        record = ok(backend.claim(Claim.first(full, identity(), 5.0), TIMEOUT))
        assert record.name == full
    stored = ok(backend.observe(full, TIMEOUT)).record
    assert stored is not None and stored.name == full
    assert full in ok(backend.names(TIMEOUT))


@settings(max_examples=300, deadline=None)
@given(
    url=st.text(max_size=80)
    | st.builds(
        lambda s, rest: f"{s}://{rest}",
        st.sampled_from(["sqlite", "mysql", "mongodb", "redis", "postgresql", "x"]),
        st.text(max_size=60),
    )
)
def test_no_url_makes_parsing_raise(url: str) -> None:
    outcome = parse_backend(url)
    assert isinstance(outcome, Success | Failure)
    if isinstance(outcome, Failure):
        assert isinstance(outcome.failure(), str) and outcome.failure()


# The schema refuses NULL (and SQLite stores NaN as NULL), so corruption means wrong types/values.
_cells = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(holder=_cells, token=_cells, expires=_cells, pid=_cells, started=_cells)
def test_a_hand_corrupted_sqlite_row_is_a_failure_or_a_record_never_an_exception(
    tmp_path: Path, holder: object, token: object, expires: object, pid: object, started: object
) -> None:
    path = tmp_path / "fuzz.db"
    backend = connect(f"sqlite:///{path}")
    backend.names(TIMEOUT)
    with sqlite3.connect(path) as raw:
        raw.execute("DELETE FROM gomaster_lock")
        raw.execute(
            "INSERT INTO gomaster_lock VALUES ('x', ?, '', ?, 0, 0, ?, 'h', ?, ?, 0, 0, 1, '')",
            (holder, token, expires, pid, started),
        )
    outcome = result(backend.observe("x", TIMEOUT))
    if isinstance(outcome, Failure):
        assert isinstance(outcome.failure(), MalformedRecord)
    else:
        record = outcome.unwrap().record
        assert record is not None and record.token >= 0
        assert record.ledger.started is None or record.ledger.started >= 0
    backend.close()
