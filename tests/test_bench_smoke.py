"""Smoke runs of the benchmarks: every entry point on a tiny size, so none of them rots unseen.

Benchmarks are not tests: nothing here judges a number, only that each benchmark still runs on
SQLite (and the tooz peer on a throwaway Redis, where redis-server and tooz are installed) and
produces numbers. ``make bench`` runs the real sizes.
"""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import footprint
from bench.suite import TOOZ, Results

ROOT = Path(__file__).resolve().parent.parent
#: A decimal number in a benchmark's printed output.
NUMBER = re.compile(r"\d+\.\d+")
SUITE_TIMEOUT = 120
ENTRY_TIMEOUT = 60
HEADINGS = (
    "## Crash failover",
    "## Expiry -> work",
    "## Graceful handover",
    "## Renewal cost",
    "## Supervisor -> worker, and Elected -> target running",
    "## Pure core",
    "## Scale",
    "## Footprint",
    "## Many names on one node",
    "## Peer: tooz on the same Redis",
)


def _run(*args: str, timeout: float = ENTRY_TIMEOUT) -> str:
    """``python -m ARGS`` from the repository root; fails the test with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"python -m {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Results, Path]:
    """One ``python -m bench --smoke`` run: its saved results and the directory it wrote to."""
    out = tmp_path_factory.mktemp("bench")
    saved = out / "results.pkl"
    _run(
        "bench",
        "--smoke",
        "--out",
        str(out / "benchmarks.md"),
        "--img",
        str(out / "img"),
        "--save",
        str(saved),
        timeout=SUITE_TIMEOUT,
    )
    results: Results = pickle.loads(saved.read_bytes())
    return results, out


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def test_the_suite_measures_every_figure_on_sqlite(smoke: tuple[Results, Path]) -> None:
    results, _ = smoke
    assert not [key for key in results.missing if "sqlite" in key or key in ("core", "runtime", "scale")]
    assert results.core and all(rate > 0 for rate in results.core.values())
    runtime = results.runtime
    assert runtime is not None
    assert _positive(runtime.pipe.p50) and _positive(runtime.forked.p50) and _positive(runtime.spawned.p50)
    cost = results.renewal["sqlite"]
    assert cost.statements is not None and cost.statements >= 1
    assert _positive(cost.renew.p50) and _positive(cost.ping.p50) and _positive(cost.write.p50)
    (crash,) = results.crash[("sqlite", 1.0)]
    assert _positive(crash.seconds) and _positive(crash.floor) and crash.expiry_to_work is not None
    (handover,) = results.graceful["sqlite"]
    assert _positive(handover.seconds)
    (level,) = results.scale
    assert level.renewals_ok > 0 and _positive(level.renew_p50)


def test_the_tooz_peer_is_timed_by_the_same_harness(smoke: tuple[Results, Path]) -> None:
    results, _ = smoke
    (handover,) = results.graceful[TOOZ]
    assert _positive(handover.seconds)


def test_the_footprint_measures_each_system_in_each_role(smoke: tuple[Results, Path]) -> None:
    results, _ = smoke
    run = results.footprint
    assert run is not None, results.missing.get("footprint")
    for system in footprint.SYSTEMS:
        for role in footprint.ROLES:
            cell = run.cell(system, 1, role)
            why = [skipped.reason for skipped in run.skipped if skipped.system == system]
            assert cell is not None, f"{system} {role} not measured: {why}"
            assert cell.processes >= 1 and cell.pss_mib > 0 and cell.cpu_percent >= 0


def test_many_names_stay_with_their_holder(smoke: tuple[Results, Path]) -> None:
    results, _ = smoke
    run = results.many
    assert run is not None, results.missing.get("many names")
    assert run.reads > 0 and len(run.nodes) == 1 + run.followers
    assert all(node.processes >= 1 and node.pss_mib > 0 for node in run.nodes)


def test_the_page_has_every_figure_and_its_plots(smoke: tuple[Results, Path]) -> None:
    _, out = smoke
    page = (out / "benchmarks.md").read_text()
    missing = [heading for heading in HEADINGS if heading not in page]
    assert not missing, f"docs page lacks {missing}"
    assert "**met**" in page or "**missed**" in page
    for plot in ("crash_failover.png", "graceful_handover.png"):
        assert (out / "img" / plot).stat().st_size > 0, f"{plot} is empty"


@pytest.mark.parametrize(
    "entry",
    [
        ["bench.core_throughput", "--seconds", "0.05"],
        ["bench.renewal", "--backend", "{db}", "--renewals", "20"],
        ["bench.runtime_latency", "--messages", "10", "--elections", "1", "--spawns", "1"],
        ["bench.failover", "--backend", "{db}", "--ttl", "1", "--rounds", "1", "--mode", "graceful"],
        ["bench.scale", "--backend", "{db}", "--electors", "2", "--contenders", "2", "--window", "0.5"],
        ["bench.many_names", "--backend", "{db}", "--names", "2", "--duration", "1", "--settle", "0.3"],
    ],
    ids=lambda entry: entry[0],
)
def test_each_entry_point_prints_numbers(entry: list[str], tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'bench.db'}"
    if entry[0] == "bench.scale":
        entry = [*entry, "--ttl", "1", "--settle", "0.2"]
    printed = _run(*(arg.replace("{db}", database) for arg in entry))
    assert NUMBER.search(printed), f"{entry[0]} printed no number:\n{printed}"


@pytest.mark.parametrize("entry", ["bench.footprint", "bench.many_names", "bench.names_node"])
def test_each_node_and_harness_explains_itself(entry: str) -> None:
    assert "usage:" in _run(entry, "--help")
