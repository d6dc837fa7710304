"""``gomaster demo`` as a newcomer runs it: short runs show failovers, and however it is ended
(Ctrl-C, SIGTERM, SIGHUP, even SIGKILL) its nodes end with it."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator

import pytest

from gomaster.runtime.tree import descendants
from tests.cli.output import Output, start
from tests.runtime.cluster import ROOT, alive, wait_gone

GOMASTER = [sys.executable, "-m", "gomaster.cli"]
#: The nodes' Python start-up and first election, on a loaded machine.
STARTUP = 30.0
#: How long the nodes and their workers may outlive a demo that was stopped or killed.
ORPHAN_GRACE = 3.0
#: How long a stopped demo may take to stop its nodes and print its summary.
STOP_TIME = 20.0


def _start(*args: str) -> Output:
    return start([*GOMASTER, "demo", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.fixture
def started() -> Iterator[list[Output]]:
    """Demos a test started; whatever is left of them is killed afterwards."""
    demos: list[Output] = []
    yield demos
    for demo in demos:
        below = descendants(demo.process.pid) if demo.process.poll() is None else []
        if demo.process.poll() is None:
            demo.process.kill()
            demo.process.wait()
        for pid in below:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _failovers(summary: str) -> int:
    found = re.search(r"Summary: \d+ tenures, (\d+) failovers", summary)
    assert found is not None, f"no summary in:\n{summary}"
    return int(found.group(1))


def test_a_five_second_demo_shows_a_failover(started: list[Output]) -> None:
    demo = _start("--duration", "5")
    started.append(demo)
    assert demo.finish(60) == 0, demo.text("stderr")
    shown = demo.text("stdout")
    assert _failovers(shown) >= 1, shown
    assert re.search(r"is master \(token \d+\): failover \d+\.\d+ s", shown), shown
    assert "overlapping tenures seen: 0" in shown, shown


def _running_demo(started: list[Output]) -> tuple[Output, list[int]]:
    """A demo whose first master works, and every process below it."""
    demo = _start("--duration", "120")
    started.append(demo)
    demo.wait_for("is master (token 1)", timeout=STARTUP)
    below = descendants(demo.process.pid)
    assert len(below) >= 3, f"expected three nodes and their workers below the demo, found {below}"
    return demo, below


@pytest.mark.parametrize(
    "how",
    ["ctrl-c", "sigterm", "sighup"],
)
def test_a_stopped_demo_prints_its_summary_exits_0_and_takes_its_nodes_with_it(
    started: list[Output], how: str
) -> None:
    demo, below = _running_demo(started)
    match how:
        case "ctrl-c":  # the terminal sends SIGINT to the foreground process group
            os.killpg(demo.process.pid, signal.SIGINT)
        case "sigterm":
            demo.process.send_signal(signal.SIGTERM)
        case _:
            demo.process.send_signal(signal.SIGHUP)
    assert demo.finish(STOP_TIME) == 0, demo.text("stderr")
    assert "Summary:" in demo.text("stdout"), demo.text("stdout")
    assert "Traceback" not in demo.text("stderr"), demo.text("stderr")
    assert "KeyboardInterrupt" not in demo.text("stderr"), demo.text("stderr")
    wait_gone(below, timeout=ORPHAN_GRACE)


def test_a_sigkilled_demo_leaves_no_node_behind(started: list[Output]) -> None:
    demo, below = _running_demo(started)
    demo.process.kill()
    demo.process.wait()
    wait_gone(below, timeout=ORPHAN_GRACE)
