"""``gomaster.every()``: a job once per tick across nodes, through a failover."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import gomaster
from gomaster import Tick, Timing
from gomaster.backends import connect
from gomaster.testing import read_marks
from tests.helpers import ok
from tests.runtime.cluster import ROOT
from tests.runtime.every_node import NAME, SECOND, TTL

PERIOD = 0.5
STARTUP = 15.0


def _start(url: str, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.every_node", url, str(log), str(PERIOD), *flags],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )


def _runs(log: Path) -> list[dict[str, Any]]:
    return [mark for mark in read_marks(log) if mark["event"] == "run"]


def _wait_runs(log: Path, count: int, token: int | None = None) -> None:
    deadline = time.monotonic() + STARTUP
    while len([r for r in _runs(log) if token is None or r["token"] == token]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} runs within {STARTUP} s: {_runs(log)}"
        time.sleep(0.05)


def _end(node: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> None:
    if node.poll() is None:
        os.killpg(node.pid, sig)
    node.wait(STARTUP)


def test_each_tick_runs_once_across_two_nodes_and_the_new_master_runs_the_tick_due_in_the_failover(
    tmp_path: Path,
) -> None:
    url, log = f"sqlite:///{tmp_path / 'locks.db'}", tmp_path / "runs.jsonl"
    first = _start(url, log)
    second = None
    try:
        _wait_runs(log, 4)
        second = _start(url, log)
        _wait_runs(log, 8)
        killed_at = time.time()
        _end(first, signal.SIGKILL)  # the whole node: supervisor, zygote, worker, job
        [old] = {run["token"] for run in _runs(log)}
        _wait_runs(log, 4, token=old + 1)
    finally:
        _end(first, signal.SIGKILL)
        if second is not None:
            _end(second)
    runs = _runs(log)
    ticks = [run["tick"] for run in runs]
    assert [t for t, n in collections.Counter(ticks).items() if n > 1] == [], "a tick ran twice"
    assert ticks == sorted(ticks), "ticks ran out of order"
    assert all(round(t / PERIOD) * PERIOD == t for t in ticks), "a run at an instant that is no tick"
    assert all(run["valid"] for run in runs), "a job ran outside its tenure"
    before = [r["tick"] for r in runs if r["token"] == old]
    after = [r["tick"] for r in runs if r["token"] == old + 1]
    assert set(ticks) == set(before) | set(after), "a tick ran under a third tenure"
    # While a node held the lease, every tick ran; the failover (ttl) collapses its ticks into
    # one, the latest, run as soon as the new master is elected (missed="latest").
    assert before == [before[0] + k * PERIOD for k in range(len(before))]
    assert after == [after[0] + k * PERIOD for k in range(len(after))]
    assert after[0] - before[-1] <= (killed_at - before[-1]) + TTL + 2 * PERIOD
    record = ok(connect(url).observe(NAME, 5.0)).record
    assert record is not None and record.ledger.started is not None
    assert record.ledger.started >= after[-1], "the ledger lags the runs it saw start"
    assert record.ledger.schedule == "every 500ms"


def test_a_failed_run_is_recorded_failed_and_the_next_tick_still_runs(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'locks.db'}", tmp_path / "runs.jsonl"
    node = _start(url, log, "--fail-first")
    try:
        _wait_runs(log, 1)
        first = _runs(log)[0]["tick"]
        backend = connect(url)
        deadline = time.monotonic() + STARTUP
        while (found := ok(backend.observe(NAME, 5.0)).record) is None or found.ledger.finished != first:
            assert time.monotonic() < deadline, "the failed run's end was never recorded"
            time.sleep(0.02)
        assert found.ledger.ok is False
        _wait_runs(log, 3)
    finally:
        _end(node)
    later = ok(connect(url).observe(NAME, 5.0)).record
    assert later is not None and later.ledger.ok and later.ledger.started is not None
    assert later.ledger.started > first


def test_one_node_carries_two_schedules_each_with_its_own_period_and_ledger(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path / 'locks.db'}", tmp_path / "runs.jsonl"
    node = _start(url, log, "--two")
    try:
        deadline = time.monotonic() + STARTUP
        while len([r for r in _runs(log) if r["lock"] == SECOND]) < 3:
            assert time.monotonic() < deadline, f"too few runs of {SECOND}: {_runs(log)}"
            time.sleep(0.05)
    finally:
        _end(node)
    runs = _runs(log)
    for lock, period in ((NAME, PERIOD), (SECOND, 2 * PERIOD)):
        ticks = [r["tick"] for r in runs if r["lock"] == lock]
        assert ticks == [ticks[0] + k * period for k in range(len(ticks))], f"{lock}: {ticks}"
        record = ok(connect(url).observe(lock, 5.0)).record
        assert record is not None and record.ledger.schedule == f"every {round(period * 1000)}ms"


def _job(tick: Tick) -> None:
    """Never run: the calls below are refused first."""


async def _async_job(tick: Tick) -> None:
    """Never run either."""


def test_a_coroutine_given_for_the_job_is_refused_naming_the_fix() -> None:
    coroutine = _async_job(Tick(0.0, gomaster.Leadership(name="x", node_id="n", token=1, since=0.0)))
    try:
        with pytest.raises(TypeError, match="pass the function, not the coroutine it returns"):
            gomaster.every("5m", coroutine, backend="memory://", timing=Timing.from_ttl(TTL))  # type: ignore[arg-type]
    finally:
        coroutine.close()


@pytest.mark.parametrize(
    ("args", "keywords", "error", "says"),
    [
        ((), {"job": _job}, ValueError, "exactly one of them"),
        (("5m",), {"job": _job, "cron": "0 3 * * *"}, ValueError, "exactly one of them"),
        (("soon", _job), {}, ValueError, "invalid duration 'soon'"),
        (("100ms", _job), {}, ValueError, "shorter than the heartbeat"),
        ((), {"job": _job, "cron": "0 3 * *"}, ValueError, "invalid cron expression"),
        ((), {"job": _job, "cron": "0 3 * * *", "tz": "Mars/Olympus"}, ValueError, "unknown time zone"),
        (("5m", _job), {"tz": "Europe/Paris"}, ValueError, "tz applies to a cron expression only"),
        (("5m",), {}, TypeError, "every() needs a job"),
        (("5m", _job), {"name": ""}, ValueError, "lock name must not be empty"),
    ],
)
def test_a_bad_schedule_is_refused_before_anything_starts_naming_the_fix(
    args: tuple[Any, ...], keywords: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=None) as raised:
        gomaster.every(*args, backend="memory://", timing=Timing.from_ttl(TTL), **keywords)
    assert says in str(raised.value)


def test_schedules_refuses_what_is_no_on_and_an_empty_mapping_naming_the_fix() -> None:
    with pytest.raises(TypeError, match=r"must be a gomaster\.On"):
        gomaster.schedules({"x": _job}, backend="memory://", timing=Timing.from_ttl(TTL))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one lock name"):
        gomaster.schedules({}, backend="memory://")
