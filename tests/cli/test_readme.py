"""The README's example runs as written, and prints what the README says it prints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.output import Output, kill_sessions, start
from tests.runtime.cluster import ROOT

README = ROOT / "README.md"
GOMASTER = [sys.executable, "-m", "gomaster.cli"]
#: The example's own line, with the token it works under.
WORKING = "sweeping as master, fencing token {token}"
#: Starting Python, spawning the workers and winning the election, on a loaded machine.
STARTUP = 30.0
#: How often a follower with the default timings looks at the lease (``Timing().retry``).
LOOK_EVERY = 1.0


def readme_example() -> str:
    """The first Python block of the README: the one a newcomer copies."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no ```python block"
    example: str = blocks[0]
    return example


def readme_output(label: str) -> list[str]:
    """The log lines the README shows after ``label``, as ``LEVEL message`` (no timestamp)."""
    after = README.read_text().split(label, 1)[1]
    block = re.search(r"```text\n(.*?)```", after, flags=re.DOTALL)
    assert block is not None, f"no output block after {label!r}"
    lines = block.group(1).splitlines()
    return [line.split(" gomaster ", 1)[1] for line in lines if " gomaster " in line]


#: What differs from one machine or run to the next in a log line.
VARYING = re.compile(r"(master is \S+ pid \d+)")


def line_pattern(line: str) -> str:
    """A regular expression for ``line`` that lets the host and PID of the master vary."""
    return "".join(
        r"master is \S+ pid \d+" if VARYING.fullmatch(part) else re.escape(part)
        for part in VARYING.split(line)
    )


class Example:
    """Copies of the README's example, each a node, on one SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        self.script = tmp_path / "sweeper.py"
        self.script.write_text(readme_example())
        self.env = {
            **os.environ,
            "GOMASTER_BACKEND": f"sqlite:///{tmp_path / 'x.db'}",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("GOMASTER_NAME", None)
        self.cwd = tmp_path
        self.running: list[Output] = []

    def start(self) -> Output:
        output = start([sys.executable, str(self.script)], cwd=self.cwd, env=self.env)
        self.running.append(output)
        return output

    def status(self) -> dict[str, object]:
        shown = subprocess.run(
            [*GOMASTER, "status", "--name", "sweeper", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        fields: dict[str, object] = json.loads(shown.stdout)
        return fields

    def stop(self) -> None:
        kill_sessions(self.running)


@pytest.fixture
def example(tmp_path: Path) -> Iterator[Example]:
    made = Example(tmp_path)
    yield made
    made.stop()


def test_the_readme_example_is_elected_works_and_stops_cleanly_on_sigterm(example: Example) -> None:
    node = example.start()
    node.wait_for(WORKING.format(token=1), timeout=STARTUP)
    node.process.send_signal(signal.SIGTERM)
    assert node.finish(30) == 0, node.text("stderr")
    errors = node.text("stderr")
    assert "Traceback" not in errors, errors
    assert "INFO elected master of 'sweeper' with token 1" in errors, errors
    assert "INFO demoted from master of 'sweeper' (token 1): stopped" in errors, errors
    assert "WARNING demoted" not in errors, errors
    released = example.status()
    assert (released["holder"], released["token"], released["has_master"]) == ("", 1, False)


def test_a_second_copy_waits_saying_who_is_master_once_and_takes_over_at_once(example: Example) -> None:
    first = example.start()
    first.wait_for(WORKING.format(token=1), timeout=STARTUP)
    second = example.start()
    waiting = f"waiting: master is {os.uname().nodename} pid {first.process.pid} (token 1)"
    second.wait_for(waiting, "stderr", timeout=STARTUP)
    time.sleep(3 * LOOK_EVERY)  # several more looks at the same lease: nothing more to say
    first.process.send_signal(signal.SIGTERM)
    second.wait_for(WORKING.format(token=2), timeout=10)
    assert second.text("stderr").count("waiting: master is") == 1, second.text("stderr")
    assert "INFO elected master of 'sweeper' with token 2" in second.text("stderr")
    assert first.finish(30) == 0


def test_the_output_the_readme_shows_is_what_the_example_prints(example: Example) -> None:
    first = example.start()
    first.wait_for(WORKING.format(token=1), timeout=STARTUP)
    second = example.start()
    second.wait_for("waiting: master is", "stderr", timeout=STARTUP)
    os.killpg(first.process.pid, signal.SIGINT)  # Ctrl-C in its terminal
    second.wait_for(WORKING.format(token=2), timeout=10)
    assert first.finish(30) == 0
    for label, output in (("from start to Ctrl-C:", first), ("which takes over:", second)):
        shown = readme_output(label)
        assert shown, f"the README shows no log line after {label!r}"
        printed = output.text("stderr")
        for line in shown:
            if "no backend given" in line:
                continue  # shown without GOMASTER_BACKEND, which this test sets
            assert re.search(line_pattern(line), printed), (
                f"README shows {line!r}; the example printed:\n{printed}"
            )
