"""The lock record and its parsing: corruption becomes a value, never an exception."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from gomaster.core.record import (
    MAX_NAME_LENGTH,
    MAX_TOKEN,
    MAX_VERSION_LENGTH,
    LockRecord,
    MalformedRecord,
    check_name,
    check_version,
    parse_record,
)
from tests.core.strategies import NAME, record, records

FIELDS = ("holder", "version", "token", "acquired_at", "renewed_at", "expires_at", "host", "pid")

#: What a driver might hand back for one column: right types, wrong types, and odd numbers.
column_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def fields_of(seen: LockRecord) -> dict[str, object]:
    """The record as a backend row: every field but the name."""
    row: dict[str, object] = asdict(seen)
    del row["name"]
    return row


@given(fields=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), column_values))
def test_parse_record_never_raises_on_arbitrary_fields(fields: dict[str, object]) -> None:
    outcome = parse_record(NAME, fields)
    assert isinstance(outcome, Success | Failure), f"parse_record returned {outcome!r}"


@given(seen=records())
def test_parse_record_reads_back_every_well_formed_record(seen: LockRecord) -> None:
    assert parse_record(NAME, fields_of(seen)) == Success(seen)


@given(seen=records(), column=st.sampled_from(FIELDS), value=column_values)
def test_a_corrupted_column_is_a_failure_naming_the_lock_or_a_valid_record(
    seen: LockRecord, column: str, value: object
) -> None:
    row = fields_of(seen) | {column: value}
    match parse_record(NAME, row):
        case Failure(MalformedRecord(name=name)):
            assert name == NAME
        case Success(parsed):
            assert isinstance(parsed.token, int) and 0 <= parsed.token < MAX_TOKEN
            for time in (parsed.acquired_at, parsed.renewed_at, parsed.expires_at):
                assert math.isfinite(time), f"accepted a non-finite time in {parsed!r}"


def test_a_time_too_large_for_a_float_is_a_failure() -> None:
    row = fields_of(record()) | {"expires_at": 10**400}
    assert isinstance(parse_record(NAME, row), Failure)


@pytest.mark.parametrize("token", [-1, MAX_TOKEN, True, 1.0, "1", None])
def test_a_token_outside_signed_64_bits_or_not_an_int_is_malformed(token: object) -> None:
    row = fields_of(record()) | {"token": token}
    assert isinstance(parse_record(NAME, row), Failure), f"token {token!r} was accepted"


@pytest.mark.parametrize("time", [math.nan, math.inf, -math.inf, "12", None, False])
def test_a_time_that_is_not_a_finite_number_is_malformed(time: object) -> None:
    row = fields_of(record()) | {"renewed_at": time}
    assert isinstance(parse_record(NAME, row), Failure), f"renewed_at {time!r} was accepted"


def test_missing_text_columns_read_as_released_and_empty() -> None:
    row = {"token": 4, "acquired_at": 1, "renewed_at": 2, "expires_at": 3, "pid": 0}
    parsed = parse_record(NAME, row).unwrap()
    assert parsed.released
    assert (parsed.holder, parsed.version, parsed.host) == ("", "", "")
    assert parsed.token == 4


def test_a_lease_is_live_only_before_its_expiry_and_only_while_held() -> None:
    held = record(holder="b", renewed_at=10.0, expires_at=15.0)
    assert held.live_at(14.999)
    assert not held.live_at(15.0), "a lease must be over at its expiry instant"
    released = record(holder="", renewed_at=10.0, expires_at=15.0)
    assert released.released
    assert not released.live_at(11.0), "a released lease must never count as live"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * (MAX_NAME_LENGTH + 1), "longer"),
        ("bad\nname", "control"),
        ("tab\there", "control"),
        ("csi\x9b2J", "control"),
        ("job-\udc80", "lone surrogate"),
        ("\ud83d\ude00", "lone surrogate"),
        (b"bytes", "string"),
        (None, "string"),
    ],
)
def test_check_name_refuses_names_a_backend_cannot_store(name: object, problem: str) -> None:
    match check_name(name):
        case Failure(message):
            assert problem in message
        case Success(_):
            pytest.fail(f"{name!r} was accepted as a lock name")


@pytest.mark.parametrize("name", ["default", "jobs/nightly", "x" * MAX_NAME_LENGTH, "ünïcode"])
def test_check_name_accepts_printable_names(name: str) -> None:
    assert check_name(name) == Success(name)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("1.0\x1b[2J", "must not contain control characters, got '1.0\\x1b[2J'"),
        ("1.0\r\n", "must not contain control characters"),
        ("1.0\x85", "must not contain control characters"),
        ("1.0\udc80", "lone surrogate"),
        ("x" * (MAX_VERSION_LENGTH + 1), "longer than 255"),
        (1.0, "must be a string"),
    ],
)
def test_check_version_refuses_what_a_backend_cannot_store_or_a_terminal_would_obey(
    version: object, problem: str
) -> None:
    match check_version(version):
        case Failure(message):
            assert problem in message, message
        case Success(_):
            pytest.fail(f"{version!r} was accepted as a version")


@pytest.mark.parametrize(
    "version", ["", "1.4.2", "2024-06-01+g3f2a", "v1 (ünïcode)", "x" * MAX_VERSION_LENGTH]
)
def test_check_version_accepts_ordinary_versions(version: str) -> None:
    assert check_version(version) == Success(version)
