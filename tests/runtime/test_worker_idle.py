"""The zygote costs nothing while it waits; a worker it forks keeps every watch of its own.

Every node keeps a zygote, and a cluster of many nodes has dozens of them, so one that woke
many times a second would keep a small host busy for nothing. Here this test process plays the
supervisor, with the real zygote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gomaster.core.events import Elected
from gomaster.runtime.clock import boottime
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.packing import modules_for, pack
from gomaster.runtime.worker import TargetFailed, TargetStarted, WorkerExit, WorkerReady, WorkerSpec
from gomaster.runtime.zygote import ForkedWorker, Zygote
from tests.helpers import wait_until
from tests.runtime import dill_probe

#: A thread that polls every 20 ms switches context about 50 times a second.
IDLE_SWITCHES_AT_MOST = 10
BOOT = 30.0


def _write_then_wait(leadership: Leadership) -> None:
    """The target: says it runs, then works until it is stopped."""
    Path(os.environ["GOMASTER_TEST_MARK"]).write_text(str(leadership.token))
    while True:
        time.sleep(0.01)


def _switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


class _Node:
    """This process as a supervisor: a zygote, and the workers it forked."""

    def __init__(
        self, mark: Path, preload: dict[int, bytes] | None = None, modules: tuple[str, ...] = ()
    ) -> None:
        os.environ["GOMASTER_TEST_MARK"] = str(mark)
        self.lease = SharedLease()
        self.zygote = Zygote(self.lease, preload, modules)
        self.zygote.start()
        assert self.zygote.conn.poll(BOOT), "the zygote did not boot"
        self.zygote.on_message()
        assert self.zygote.ready
        self.forked: list[ForkedWorker] = []

    def fork(self, target: Any = _write_then_wait) -> tuple[ForkedWorker, Any]:
        spec = WorkerSpec(index=0, label="t", grace=0.2)
        made = self.zygote.fork(spec, pack(target))
        assert not isinstance(made, str), made
        self.forked.append(made[0])
        return made

    def close(self) -> None:
        for worker in self.forked:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGKILL)
            worker.join(5)
        self.zygote.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[_Node]:
    made = _Node(tmp_path / "mark")
    yield made
    made.close()


def test_an_idle_zygote_sleeps(node: _Node) -> None:
    time.sleep(0.3)
    before = _switches(node.zygote.process.pid)
    time.sleep(1.0)
    assert _switches(node.zygote.process.pid) - before <= IDLE_SWITCHES_AT_MOST


def test_a_forked_worker_ends_at_once_when_its_supervisor_end_closes(node: _Node) -> None:
    worker, conn = node.fork()
    conn.close()
    assert worker.join(1.0), "the worker outlived its supervisor's end"


def test_a_forked_worker_says_how_it_exits_before_it_does(node: _Node) -> None:
    worker, conn = node.fork()
    assert conn.poll(BOOT) and isinstance(conn.recv(), WorkerReady)
    os.kill(worker.pid, signal.SIGTERM)  # not elected yet: a stop before the tenure
    assert worker.join(2.0)
    assert conn.poll(0) and conn.recv() == WorkerExit(0)
    worker.exited(0)
    assert worker.exitcode == 0
    conn.close()


def test_a_worker_is_gone_when_its_zygote_is_killed(node: _Node) -> None:
    worker, _ = node.fork()
    os.kill(node.zygote.process.pid, signal.SIGKILL)
    assert worker.join(2.0), "a worker outlived its zygote"


def test_once_elected_the_worker_stops_its_work_when_the_lease_deadline_passes(
    node: _Node, tmp_path: Path
) -> None:
    worker, conn = node.fork()
    _elect(node, conn, 7)  # a long lease while the target loads (seconds on a loaded host)
    wait_until((tmp_path / "mark").exists, BOOT, "target start")
    assert (tmp_path / "mark").read_text() == "7"
    deadline = boottime() + 0.5
    node.lease.publish(7, deadline)
    # Never renewed: the watchdog ends the work at the deadline (SIGTERM, SIGKILL after grace).
    assert worker.join(deadline - boottime() + 0.2 + 1.0)
    assert boottime() >= deadline


def test_a_worker_at_work_sleeps_until_its_lease_deadline_and_a_renewal_moves_it_on(
    node: _Node, tmp_path: Path
) -> None:
    worker, conn = node.fork()
    _elect(node, conn, 8)  # a long lease while the target loads (seconds on a loaded host)
    wait_until((tmp_path / "mark").exists, BOOT, "target start")
    deadline = boottime() + 1.5
    node.lease.publish(8, deadline)
    before = _switches(worker.pid)
    time.sleep(1.0)
    # At most one look every 0.25 s (a 20 ms poll would be 50 a second).
    assert _switches(worker.pid) - before <= 4 * IDLE_SWITCHES_AT_MOST
    renewed = boottime() + 1.0
    node.lease.publish(8, renewed)  # a renewal: the work goes on past the first deadline
    time.sleep(max(0.0, deadline - boottime()) + 0.3)
    assert worker.is_alive()
    assert worker.join(renewed - boottime() + 0.2 + 1.0), "the work outlived the renewed deadline"
    assert boottime() >= renewed


def _elect(node: _Node, conn: Any, token: int) -> None:
    deadline = boottime() + 30.0
    node.lease.publish(token, deadline)
    conn.send(Elected(name="lock", node_id="n", token=token, since=0.0, deadline=deadline))


@pytest.mark.parametrize("preload", [False, True], ids=["each-target", "preload"])
def test_a_targets_module_is_imported_by_each_targets_process_not_by_the_zygote_or_worker_unless_preloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, preload: bool
) -> None:
    imports = tmp_path / "imports"
    monkeypatch.setenv("GOMASTER_TEST_IMPORTS", str(imports))
    from tests.runtime import imported_once  # this process's import is not counted

    packed = pack(imported_once.work)
    made = _Node(tmp_path / "mark", {0: packed} if preload else None)
    try:
        forked = [made.fork(imported_once.work) for _ in range(2)]
        for token, (worker, conn) in enumerate(forked, start=1):
            assert conn.poll(BOOT) and isinstance(conn.recv(), WorkerReady)
            _elect(made, conn, token)
            assert worker.join(BOOT), "the worker outlived its target, which returns at once"
        keepers = {str(worker.pid) for worker, _ in forked}
        importers = [pid for pid in imports.read_text().split() if pid != str(os.getpid())]
        zygote = str(made.zygote.process.pid)
        if preload:
            assert importers == [zygote], "a preloaded target is imported once, by the zygote"
        else:
            assert zygote not in importers, "the zygote imported the target's module"
            assert not keepers & set(importers), "a worker (the keeper) imported the target's module"
            assert len(set(importers)) == 2, f"not one import per target's process: {importers}"
    finally:
        made.close()


class _LoadsBadly:
    """A target whose bytes cannot be loaded: unpickling it raises."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_refuse, ("no such application",))

    def __call__(self, leadership: Leadership) -> None:
        del leadership


def _refuse(why: str) -> None:
    raise ImportError(why)


def test_a_target_that_cannot_be_loaded_is_reported_with_its_traceback_and_its_worker_exits_1(
    node: _Node,
) -> None:
    worker, conn = node.fork(_LoadsBadly())
    assert conn.poll(BOOT) and isinstance(conn.recv(), WorkerReady)
    _elect(node, conn, 5)
    assert worker.join(BOOT), "the worker outlived a target that could not load"
    said: list[object] = []
    with contextlib.suppress(EOFError):
        while conn.poll(0):
            said.append(conn.recv())
    failures = [m for m in said if isinstance(m, TargetFailed)]
    assert failures and failures[0].token == 5, said
    assert failures[0].error.startswith("cannot load the target:"), failures[0].error
    assert "no such application" in failures[0].error, failures[0].error
    assert not any(isinstance(m, TargetStarted) for m in said), "a target that never ran was said to start"
    assert said[-1] == WorkerExit(1), said


@pytest.mark.parametrize("by_value", [False, True], ids=["by-reference", "by-value"])
def test_the_zygote_imports_dill_at_boot_only_when_a_target_travels_by_value(
    tmp_path: Path, by_value: bool
) -> None:
    targets = [pack(dill_probe.say_whether_dill_is_loaded)]
    if by_value:
        targets.append(pack(lambda leadership: None))
    assert modules_for(targets) == (("dill",) if by_value else ())
    made = _Node(tmp_path / "mark", modules=modules_for(targets))
    try:
        worker, conn = made.fork(dill_probe.say_whether_dill_is_loaded)
        assert conn.poll(BOOT) and isinstance(conn.recv(), WorkerReady)
        _elect(made, conn, 1)
        assert worker.join(BOOT)
        assert (tmp_path / "mark").read_text() == str(by_value), "what the target's process inherited"
    finally:
        made.close()
