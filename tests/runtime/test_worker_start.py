"""What a worker process loads when it starts: every crash restart or demotion pays for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gomaster
from gomaster.testing import read_marks

#: The machinery a worker never runs; loading it cost a cold worker start over 100 ms of CPU.
SUPERVISOR_ONLY = (
    "gomaster.core.election",
    "gomaster.runtime.elector",
    "gomaster.runtime.supervisor",
    "gomaster.runtime.master",
    "gomaster.backends",
)
#: How long the slow node's worker takes to boot.
WORKER_BOOT = 1.5


def _modules_after(statement: str) -> set[str]:
    probe = f"{statement}; import json, sys; print(json.dumps(sorted(sys.modules)))"
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def test_the_zygote_its_workers_and_the_demo_work_load_none_of_the_supervisor_machinery() -> None:
    loaded = _modules_after("import gomaster.runtime.zygote, gomaster.cli.demo")
    assert "gomaster.runtime.worker" in loaded and "gomaster.runtime.zygote" in loaded
    assert not loaded & set(SUPERVISOR_ONLY), sorted(loaded & set(SUPERVISOR_ONLY))


def test_every_public_name_is_still_there_on_first_use() -> None:
    for name in gomaster.__all__:
        assert getattr(gomaster, name) is not None, name
    assert set(gomaster.__all__) <= set(dir(gomaster))
    loaded = _modules_after("import gomaster; gomaster.supervise")
    assert "gomaster.runtime.supervisor" in loaded


def test_a_node_claims_the_lock_only_once_its_worker_could_start_the_work(tmp_path: Path) -> None:
    """A node still booting must not win a lock from followers that could work at once."""
    log = tmp_path / "marks.jsonl"
    command = [sys.executable, "-m", "tests.runtime.slow_boot", "--backend", f"sqlite:///{tmp_path / 'l.db'}"]
    command += ["--log", str(log), "--boot", str(WORKER_BOOT)]
    node = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not any(m["event"] == "start" for m in read_marks(log)):
            time.sleep(0.02)
        marks = read_marks(log)
    finally:
        node.terminate()
        node.wait(15)
    held = [float(str(m["t"])) for m in marks if m["event"] == "held"]
    started = [float(str(m["t"])) for m in marks if m["event"] == "start"]
    assert held and started, marks
    # Before, the node held the lock for the whole boot of its worker while nobody worked.
    assert started[0] - held[0] < WORKER_BOOT / 2, (held[0], started[0])


#: A script run as ``__main__`` whose targets are a closure and a lambda of that script: each
#: writes its lock name to the marks file; importing the script records the importer's PID.
_SCRIPT = """
import os, sys, time
from pathlib import Path

with open(sys.argv[3], "a") as imports:
    imports.write(f"{os.getpid()}\\n")

from gomaster import Timing, supervise

MARKS = Path(sys.argv[2])


def make(tag):
    def closure(leadership):
        with MARKS.open("a") as marks:
            marks.write(f"{tag} {leadership.token}\\n")
        time.sleep(3600)

    return closure


if __name__ == "__main__":
    supervise(
        {"closure": make("closure"), "lambda": lambda leadership: make("lambda")(leadership)},
        backend=sys.argv[1],
        timing=Timing.from_ttl(1.0),
    )
"""


def test_targets_defined_in_a_main_script_run_although_the_zygote_never_imports_that_script(
    tmp_path: Path,
) -> None:
    script, marks, imports = tmp_path / "app.py", tmp_path / "marks", tmp_path / "imports"
    script.write_text(_SCRIPT)
    command = [sys.executable, str(script), f"sqlite:///{tmp_path / 'l.db'}", str(marks), str(imports)]
    node = subprocess.Popen(command, start_new_session=True)
    try:
        deadline = time.monotonic() + 30.0
        started: set[str] = set()
        while time.monotonic() < deadline and started != {"closure", "lambda"}:
            time.sleep(0.05)
            lines = marks.read_text().splitlines() if marks.exists() else []
            started = {line.split()[0] for line in lines}
    finally:
        node.terminate()
        node.wait(15)
    assert started == {"closure", "lambda"}, f"only {sorted(started)} started"
    assert imports.read_text().split() == [str(node.pid)], "a process other than the node imported its script"
