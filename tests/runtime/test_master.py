"""The go-master-compatible ``Master`` facade, with real supervisor and worker processes."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gomaster import HookError, Master, Timing
from gomaster.backends import connect
from tests.helpers import WAIT, holder, ok, wait_until
from tests.runtime.cluster import ROOT, wait_gone

TIMING = Timing.from_ttl(1.0)


def _note(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write(f"{text} {time.monotonic()}\n")


def _lines(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []




def test_start_hook_runs_on_the_master_and_stop_hook_after_it_on_stop(
    url: str, tmp_path: Path, masters: list[Master]
) -> None:
    notes = tmp_path / "hooks.txt"
    master = Master(
        url,
        name="hooks",
        start_hook=lambda: _note(notes, "start"),
        stop_hook=lambda: _note(notes, "stop"),
        timing=TIMING,
    )
    masters.append(master)
    assert master.id == ""
    master.start()
    assert len(master.id) == 32
    wait_until(master.is_master)
    wait_until(lambda: _lines(notes) == ["start"])
    status = master.status()
    assert status.is_master and status.holder == master.id and status.token == 1
    assert status.expires_in is not None and 0 < status.expires_in <= TIMING.ttl
    master.stop(timeout=10)
    assert _lines(notes) == ["start", "stop"]
    assert not master.is_master()


def test_stop_hook_never_starts_before_a_slow_start_hook_has_been_killed(
    url: str, tmp_path: Path, masters: list[Master]
) -> None:
    notes = tmp_path / "hooks.txt"

    def slow_start() -> None:
        _note(notes, "start")
        time.sleep(60)
        _note(notes, "start-returned")

    stop = lambda: _note(notes, "stop")  # noqa: E731
    master = Master(url, name="slow", start_hook=slow_start, stop_hook=stop, timing=TIMING)
    masters.append(master)
    master.start()
    wait_until(lambda: _lines(notes) == ["start"])
    master.stop(timeout=10)
    assert _lines(notes) == ["start", "stop"]


def test_a_raising_start_hook_is_reported_to_on_error_and_the_node_stays_master(
    url: str, masters: list[Master]
) -> None:
    errors: list[Exception] = []

    def broken() -> None:
        raise ValueError("hook broke")

    master = Master(url, name="broken", start_hook=broken, timing=TIMING, on_error=errors.append)
    masters.append(master)
    master.start()
    wait_until(lambda: len(errors) >= 2)
    assert all(isinstance(e, HookError) for e in errors)
    assert "hook broke" in str(errors[0])
    assert master.is_master()
    assert master.status().token == 1


def _ready(app: subprocess.Popen[str], timeout: float) -> bool:
    """The application printed ``ready`` (its Master is master) within ``timeout``."""
    assert app.stdout is not None
    if not select.select([app.stdout], [], [], timeout)[0]:
        return False
    return app.stdout.readline().strip() == "ready"


def test_stop_works_on_a_node_that_is_not_master(url: str, masters: list[Master]) -> None:
    leader = _app(url, "shared", "master")
    try:
        assert _ready(leader, WAIT)
        held_by = holder(url, "shared")
        follower = Master(url, name="shared", timing=TIMING)
        masters.append(follower)
        follower.start()
        time.sleep(0.5)
        assert not follower.is_master()
        started = time.monotonic()
        follower.stop(timeout=10)
        assert time.monotonic() - started < 5
        assert leader.poll() is None and holder(url, "shared") == held_by
    finally:
        leader.kill()
        leader.wait(5)


def test_stopping_the_master_hands_over_to_the_follower(url: str, masters: list[Master]) -> None:
    first = Master(url, name="handover", timing=TIMING)
    masters.append(first)
    first.start()
    wait_until(first.is_master)
    second = _app(url, "handover", "master")
    try:
        time.sleep(1.0)
        assert second.poll() is None and first.is_master()
        first.stop(timeout=10)
        assert _ready(second, TIMING.retry + 2.0), "the other node did not take over"
        record = ok(connect(url).observe("handover", 5.0)).record
        assert record is not None and record.token == 2
    finally:
        second.kill()
        second.wait(5)


def test_resign_hands_mastership_to_another_node(url: str, masters: list[Master]) -> None:
    first = Master(url, name="resign", timing=TIMING)
    masters.append(first)
    first.start()
    wait_until(first.is_master)
    second = _app(url, "resign", "master")
    try:
        time.sleep(1.0)
        first.resign()
        assert _ready(second, TIMING.retry + 2.0), "the other node did not take over"
        assert not first.is_master()
    finally:
        second.kill()
        second.wait(5)


def test_calling_start_twice_is_an_error(url: str, masters: list[Master]) -> None:
    master = Master(url, name="twice", timing=TIMING)
    masters.append(master)
    master.start()
    with pytest.raises(RuntimeError, match="already"):
        master.start()


def test_status_before_start_says_to_start_first(url: str) -> None:
    with pytest.raises(RuntimeError, match="start"):
        Master(url).status()


def test_the_supervisor_outlives_the_thread_that_started_it(url: str, masters: list[Master]) -> None:
    master = Master(url, name="thread", timing=TIMING)
    masters.append(master)
    starter = threading.Thread(target=master.start)
    starter.start()
    starter.join()
    wait_until(master.is_master)
    time.sleep(TIMING.ttl)
    assert master.is_master()
    assert master.status().token == 1


def test_a_memory_backend_cannot_be_sent_to_the_supervisor_process() -> None:
    master = Master("memory://", timing=TIMING)
    with pytest.raises(TypeError, match="sqlite"):
        master.start()


def test_each_start_gets_a_fresh_id(url: str) -> None:
    ids = set()
    for _ in range(2):
        master = Master(url, name=f"fresh-{os.getpid()}", timing=TIMING)
        master.start()
        ids.add(master.id)
        master.stop(timeout=10)
    assert len(ids) == 2


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().split(") ")[-1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, IndexError):
                continue
    return found


def _app(url: str, name: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.app", url, name, mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_when_the_application_dies_its_supervisor_stops_the_hooks_and_releases_the_lock(url: str) -> None:
    app = _app(url, "orphan", "master")
    try:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "ready"
        tree = [pid for child in _children(app.pid) for pid in [child, *_children(child)]]
        assert len(tree) >= 2, "expected a supervisor and its worker below the application"
        os.kill(app.pid, signal.SIGKILL)
        app.wait(5)
        wait_gone(tree, timeout=TIMING.grace + 3.0)
        seen = ok(connect(url).observe("orphan", 5.0))
        assert seen.record is not None
        assert seen.record.released, "the supervisor did not release the lock when its application died"
    finally:
        if app.poll() is None:
            app.kill()


def test_logs_from_a_target_reach_the_supervisors_logging(url: str) -> None:
    app = _app(url, "logging", "log")
    try:
        deadline = time.monotonic() + WAIT
        assert app.stderr is not None
        lines = []
        while time.monotonic() < deadline:
            line = app.stderr.readline()
            lines.append(line)
            if "hello from the target" in line:
                break
        assert any(line.startswith("app.target WARNING hello from the target, token 1") for line in lines), (
            lines
        )
    finally:
        app.terminate()
        app.wait(10)


def test_a_script_without_the_main_guard_fails_to_start_saying_why(url: str, tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import gomaster\n"
        f"master = gomaster.Master({url!r}, name='unguarded', timing=gomaster.Timing.from_ttl(1.0))\n"
        "master.start()\n"
        "print('started', flush=True)\n"
        "master.stop(timeout=10)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "started" not in done.stdout
    said = done.stderr[-2000:]
    assert "ended while starting" in said and "__name__ == '__main__'" in said, said
