"""``gomaster run`` on a schedule: ``--every`` and ``--cron`` (gomaster keeps the time) and
``--once-per`` (every replica's cron fires the job, one of them runs it per period)."""

from __future__ import annotations

import collections
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from gomaster.backends import connect
from tests.helpers import ok
from tests.runtime.cluster import ROOT

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
#: The period, and how far into it each node's cron may fire: every firing leaves a node more
#: than a second to start and read the ledger before the period ends, even on a loaded host.
PERIOD = 3.0
FIRE_WITHIN = 1.0
NODES = 3
#: Two names in parallel, 25 periods each: 50 periods in 75 s.
NAMES = ("nightly", "hourly")
PERIODS = 25
#: The CMD: one line per run, with what ``gomaster run`` told it.
RECORD = 'echo "$GOMASTER_NAME $GOMASTER_TICK $GOMASTER_TOKEN" >> "$RUNS"'
FINISH = 60.0


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GOMASTER_BACKEND": f"sqlite:///{tmp_path / 'locks.db'}",
        "RUNS": str(tmp_path / "runs.txt"),
    }


def _gomaster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One ``gomaster`` command to its end."""
    return subprocess.run(
        [*GOMASTER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=FINISH, check=False
    )


def _fire(env: dict[str, str], name: str, *options: str, cmd: str = RECORD) -> subprocess.Popen[str]:
    """One node's cron firing the job."""
    command = [*GOMASTER, "run", "--name", name, "--ttl", "1", *options, "--", "sh", "-c", cmd]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _runs(tmp_path: Path) -> list[tuple[str, float, int]]:
    path = tmp_path / "runs.txt"
    if not path.exists():
        return []
    lines = (line.split() for line in path.read_text().splitlines())
    return [(name, float(tick), int(token)) for name, tick, token in lines]


def test_cron_firing_on_three_nodes_at_random_moments_runs_the_job_once_in_each_of_50_periods(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    chance = random.Random()
    # SQLite on this machine: the backend's clock is this one, so periods can be aimed at.
    first = (math.floor(time.time() / PERIOD) + 1) * PERIOD
    firings = sorted(
        (first + k * PERIOD + chance.uniform(0.05, FIRE_WITHIN), name)
        for k in range(PERIODS)
        for name in NAMES
        for _ in range(NODES)
    )
    nodes: list[tuple[str, subprocess.Popen[str]]] = []
    for at, name in firings:
        time.sleep(max(0.0, at - time.time()))
        nodes.append((name, _fire(env, name, "--once-per", f"{PERIOD:g}s")))
    for _, node in nodes:
        node.wait(FINISH)
    failed = [(name, node.returncode, node.stderr.read() if node.stderr else "") for name, node in nodes]
    assert [f for f in failed if f[1] != 0] == [], "every node exits 0: it ran the period or saw it run"
    runs = collections.Counter((name, tick) for name, tick, _ in _runs(tmp_path))
    expected = {(name, first + k * PERIOD) for k in range(PERIODS) for name in NAMES}
    assert [run for run, count in runs.items() if count > 1] == [], "a period ran twice"
    assert sorted(expected - set(runs)) == [], "a period did not run"
    assert set(runs) == expected
    for node in (node for _, node in nodes):
        if node.stderr:
            node.stderr.close()


def test_every_runs_cmd_at_each_tick_on_one_of_two_nodes_with_the_tick_in_its_environment(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    nodes = [_fire(env, "sweep", "--every", "1s") for _ in range(2)]
    try:
        deadline = time.monotonic() + FINISH
        while len(_runs(tmp_path)) < 4:
            assert time.monotonic() < deadline, f"fewer than 4 runs: {_runs(tmp_path)}"
            time.sleep(0.05)
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            node.wait(FINISH)
            if node.stderr:
                node.stderr.close()
    runs = _runs(tmp_path)
    ticks = [tick for _, tick, _ in runs]
    shown = _gomaster(env, "status", "--name", "sweep", "--json")
    status = json.loads(shown.stdout)
    assert status["schedule"] == "every 1000ms" and status["last_run_token"] == 1
    assert status["last_run"] >= ticks[-1] and status["next_run"] > status["last_run"]
    assert {(name, token) for name, _, token in runs} == {("sweep", 1)}, "one master ran every tick"
    assert ticks == [ticks[0] + k for k in range(len(ticks))], "every tick once, in order, on whole seconds"
    assert ticks[0] == math.floor(ticks[0])


def test_a_node_fired_after_the_period_ran_exits_0_at_once_saying_so(tmp_path: Path) -> None:
    env = _env(tmp_path)
    done = _gomaster(env, "run", "--name", "daily", "--once-per", "1d", "--", "sh", "-c", RECORD)
    assert done.returncode == 0, done.stderr
    again = _gomaster(env, "run", "--name", "daily", "--once-per", "1d", "--", "sh", "-c", RECORD)
    assert again.returncode == 0, again.stderr
    assert "already ran, under token 1: not running CMD" in again.stderr
    assert "elected" not in again.stderr, "a period seen run needs no election"
    [(name, tick, token)] = _runs(tmp_path)
    assert (name, token) == ("daily", 1) and tick == math.floor(time.time() / 86_400) * 86_400


def test_the_ledger_records_how_the_periods_run_ended(tmp_path: Path) -> None:
    env = _env(tmp_path)
    failed = _fire(env, "report", "--once-per", "1d", cmd="exit 3")
    assert failed.wait(FINISH) == 3
    record = ok(connect(env["GOMASTER_BACKEND"]).observe("report", 5.0)).record
    assert record is not None and record.released
    ledger = record.ledger
    assert (ledger.token, ledger.ok, ledger.unfinished) == (1, False, False)
    assert ledger.started == ledger.finished == math.floor(time.time() / 86_400) * 86_400


def test_a_node_not_master_within_its_wait_timeout_gives_up_without_running_cmd(tmp_path: Path) -> None:
    env = _env(tmp_path)
    holder = _fire(env, "long", "--once", cmd='echo held >> "$RUNS.held"; sleep 30')
    deadline = time.monotonic() + FINISH
    while not Path(env["RUNS"] + ".held").exists():
        assert time.monotonic() < deadline, "the first node never ran its CMD"
        time.sleep(0.05)
    started = time.monotonic()
    waiter = _fire(env, "long", "--once", "--wait-timeout", "1")
    try:
        assert waiter.wait(FINISH) == 124
        assert time.monotonic() - started < 1 + 10, "gave up long after its wait timeout"
        assert _runs(tmp_path) == []
        assert waiter.stderr is not None and "not master after --wait-timeout 1 s" in waiter.stderr.read()
    finally:
        holder.terminate()
        holder.wait(FINISH)


def test_bad_periods_and_a_wait_timeout_without_once_are_usage_errors_naming_the_fix(tmp_path: Path) -> None:
    env = _env(tmp_path)
    cases = {
        ("--once-per", "soon"): "invalid duration 'soon'",
        ("--once-per", "100ms"): "shorter than the heartbeat",
        ("--once-per=-5m",): "invalid duration '-5m'",
        ("--wait-timeout", "5"): "add one of them",
        ("--once", "--wait-timeout", "0"): "must be positive",
        ("--every", "5m", "--once"): "choose one",
        ("--cron", "0 3 * * *", "--once-per", "1d"): "choose one",
        ("--every", "5m", "--cron", "0 3 * * *"): "not both",
        ("--every", "5m", "--tz", "Europe/Paris"): "--tz is the time zone of --cron",
        ("--cron", "0 3 * *"): "invalid cron expression",
        ("--cron", "0 3 * * *", "--tz", "Mars/Olympus"): "unknown time zone 'Mars/Olympus'",
        ("--every", "100ms"): "shorter than the heartbeat",
    }
    for options, said in cases.items():
        done = _gomaster(env, "run", "--name", "x", *options, "--", "true")
        assert done.returncode == 2, (options, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], (options, done.stderr)
