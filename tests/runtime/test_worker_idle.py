"""A warm worker costs nothing while it waits, and still watches what it must once it works.

Every follower keeps two warm workers per target; a cluster of many nodes and locks has dozens
of them, so one that woke 50 times a second to look at a deadline it does not have yet would
keep a small host busy for nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import multiprocess
import pytest

from gomaster.core.events import Elected
from gomaster.runtime.clock import boottime
from gomaster.runtime.lease import Leadership, SharedLease
from gomaster.runtime.worker import EXIT_ORPHANED, WorkerReady, WorkerSpec, worker_main
from tests.helpers import wait_until

#: A thread that polls every 20 ms switches context about 50 times a second.
IDLE_SWITCHES_AT_MOST = 10


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


class _Worker:
    def __init__(self, mark: Path) -> None:
        os.environ["GOMASTER_TEST_MARK"] = str(mark)
        context = multiprocess.get_context("spawn")
        self.lease = SharedLease(context)
        self.conn, child = context.Pipe()
        spec = WorkerSpec(index=0, label="t", target=_write_then_wait, supervisor_pid=os.getpid(), grace=0.2)
        self.process = context.Process(target=worker_main, args=(child, spec, self.lease))
        self.process.start()
        child.close()
        assert self.conn.poll(30.0), "the worker did not boot within 30 s"
        assert isinstance(self.conn.recv(), WorkerReady)
        time.sleep(0.3)

    def close(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[_Worker]:
    started = _Worker(tmp_path / "mark")
    yield started
    started.close()


def test_a_warm_worker_sleeps_until_it_is_elected(worker: _Worker) -> None:
    before = _switches(worker.process.pid)
    time.sleep(1.0)
    assert _switches(worker.process.pid) - before <= IDLE_SWITCHES_AT_MOST


def test_an_idle_worker_still_ends_at_once_when_its_supervisor_end_closes(worker: _Worker) -> None:
    worker.conn.close()
    worker.process.join(1.0)
    assert worker.process.exitcode == EXIT_ORPHANED


def test_once_elected_the_worker_stops_its_work_when_the_lease_deadline_passes(
    worker: _Worker, tmp_path: Path
) -> None:
    deadline = boottime() + 0.5
    worker.lease.publish(7, deadline)
    worker.conn.send(Elected(name="lock", node_id="n", token=7, since=0.0, deadline=deadline))
    wait_until((tmp_path / "mark").exists, 10.0, "target start")
    assert (tmp_path / "mark").read_text() == "7"
    # Never renewed: the watchdog ends the work at the deadline (SIGTERM, SIGKILL after grace).
    worker.process.join(deadline - boottime() + 0.2 + 1.0)
    assert not worker.process.is_alive()
    assert boottime() >= deadline
