"""What each backend says a failover can lose, by the settings its server reports: the pure
part of :mod:`gomaster.backends._durability` (the servers' side is in test_replicated_*)."""

from __future__ import annotations

import logging

import pytest

from gomaster.backends import _durability as durability
from gomaster.backends._durability import Durability, Report


@pytest.mark.parametrize(
    ("commit", "names", "standbys", "hosts", "at_risk"),
    [
        ("on", "", 0, 1, False),  # one server: nothing to fail over to
        ("on", "", 0, 2, True),  # a listed host that copies nothing
        ("on", "", 1, 1, True),  # an asynchronous standby
        ("on", "s1", 1, 2, False),
        ("remote_apply", "FIRST 1 (s1, s2)", 2, 3, False),
        ("remote_write", "s1", 1, 2, False),
        ("local", "s1", 1, 2, True),
        ("off", "s1", 1, 2, True),
    ],
)
def test_postgresql_is_at_risk_unless_commits_wait_for_a_synchronous_standby(
    commit: str, names: str, standbys: int, hosts: int, at_risk: bool
) -> None:
    assert durability.postgresql("pg", commit, names, standbys, hosts).at_risk is at_risk


def _semi(enabled: str = "ON", status: str = "ON", point: str = "AFTER_SYNC") -> dict[str, str]:
    return {
        "rpl_semi_sync_master_enabled": enabled,
        "rpl_semi_sync_master_status": status,
        "rpl_semi_sync_master_wait_point": point,
        "rpl_semi_sync_master_timeout": "10000",
        "slaves_connected": "1",
    }


@pytest.mark.parametrize(
    ("found", "at_risk", "words"),
    [
        (_semi(), False, "semi-synchronous replication is on (AFTER_SYNC)"),
        (_semi(status="OFF"), True, "has fallen back to asynchronous"),
        (_semi(point="AFTER_COMMIT"), True, "waits AFTER_COMMIT"),
        (_semi(enabled="OFF"), True, "replication is asynchronous"),
        ({"slaves_connected": "0"}, False, "no replica is connected"),
        # MySQL 8 names the same settings after the source.
        (
            {
                "rpl_semi_sync_source_enabled": "ON",
                "rpl_semi_sync_source_status": "ON",
                "rpl_semi_sync_source_wait_point": "AFTER_SYNC",
            },
            False,
            "(AFTER_SYNC)",
        ),
    ],
)
def test_mysql_keeps_acknowledged_writes_only_while_semi_sync_waits_after_sync(
    found: dict[str, str], at_risk: bool, words: str
) -> None:
    said = durability.mysql("db", found, 1)
    assert (said.at_risk, words in said.seen) == (at_risk, True), said


def test_redis_is_at_risk_without_wait_and_warns_when_wait_asks_for_more_replicas_than_there_are() -> None:
    assert not durability.redis("r", 0, 0, 0, sentinel=False).at_risk
    assert durability.redis("r", 0, 0, 0, sentinel=True).at_risk, "Sentinel means a failover is planned"
    assert durability.redis("r", 1, 0, 0, sentinel=False).at_risk
    assert not durability.redis("r", 1, 1, 1, sentinel=True).at_risk
    assert "every write step fails" in durability.redis("r", 1, 0, 2, sentinel=True).outcome


def test_mongodb_is_at_risk_with_any_write_concern_but_majority() -> None:
    assert not durability.mongodb("m", "majority").at_risk
    assert durability.mongodb("m", "1").at_risk


def test_a_report_logs_once_and_again_only_when_what_it_sees_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    safe, risky = Durability("db", "safe", "keeps", False), Durability("db", "risky", "loses", True)
    report = Report()
    with caplog.at_level(logging.INFO, logger="gomaster"):
        for seen in (safe, safe, risky, risky, safe):
            report.see(seen)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "db: safe; keeps"),
        (logging.WARNING, "db: risky; loses"),
        (logging.INFO, "db: safe; keeps"),
    ]
