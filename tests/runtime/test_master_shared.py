"""``Master`` objects of one application share one supervisor process per backend, each with
its own lock name; real supervisor and worker processes on SQLite."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

import gomaster
from gomaster import Leadership, Master, Timing
from tests.helpers import holder, wait_until
from tests.runtime.cluster import wait_gone

TIMING = Timing.from_ttl(1.0)


def _supervisors() -> list[int]:
    """This process's supervisor processes: spawned children that are not the resource tracker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().split(") ")[-1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as raw:
                command = raw.read().decode(errors="replace")
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
        if parent == os.getpid() and "spawn_main" in command and "resource_tracker" not in command:
            found.append(int(entry))
    return found


def _noop(_leadership: Leadership) -> None:
    pass


def _touch(path: Path) -> None:
    path.write_text(str(os.getpid()))
    while True:
        time.sleep(1)




def test_masters_of_one_application_share_one_supervisor_and_each_runs_its_own_hook(
    url: str, tmp_path: Path, masters: list[Master]
) -> None:
    before = set(_supervisors())
    made = {
        name: Master(url, name=name, start_hook=functools.partial(_touch, tmp_path / name), timing=TIMING)
        for name in ("reports", "sweeper", "mailer")
    }
    masters += made.values()
    for master in made.values():
        master.start()
    for name, master in made.items():
        wait_until(master.is_master, what=f"{name} elected")
        wait_until((tmp_path / name).exists, what=f"{name}'s start hook ran")
        assert holder(url, name) == master.id
    assert len(set(_supervisors()) - before) == 1, "expected one supervisor process for every Master"
    assert len({int((tmp_path / name).read_text()) for name in made}) == 3, "each hook in its own process"


def test_stopping_one_master_leaves_the_others_their_mastership_and_their_hooks(
    url: str, tmp_path: Path, masters: list[Master]
) -> None:
    stays = Master(url, name="stays", start_hook=lambda: _touch(tmp_path / "stays"), timing=TIMING)
    goes = Master(url, name="goes", start_hook=lambda: _touch(tmp_path / "goes"), timing=TIMING)
    masters.append(stays)
    for master in (stays, goes):
        master.start()
        wait_until(master.is_master)
    wait_until((tmp_path / "stays").exists)
    wait_until((tmp_path / "goes").exists)
    gone_hook = int((tmp_path / "goes").read_text())
    kept_hook = int((tmp_path / "stays").read_text())
    goes.stop(timeout=10)
    assert not goes.is_master()
    assert holder(url, "goes") is None, "the stopped Master's lock was not released"
    wait_gone([gone_hook], timeout=TIMING.grace + 2.0)
    time.sleep(2 * TIMING.ttl)
    assert stays.is_master() and holder(url, "stays") == stays.id
    assert stays.status().token == 1
    os.kill(kept_hook, 0)  # still running: raises if it is gone


def test_a_name_started_twice_in_one_process_is_refused_before_anything_starts(
    url: str, masters: list[Master]
) -> None:
    first = Master(url, name="once", timing=TIMING)
    masters.append(first)
    first.start()
    wait_until(first.is_master)
    supervisors = set(_supervisors())
    second = Master(url, name="once", timing=TIMING)
    with pytest.raises(ValueError, match=r"'once'.*already started in this process"):
        second.start()
    assert set(_supervisors()) == supervisors
    assert first.is_master() and first.status().token == 1


def test_a_name_can_start_again_once_its_master_stopped_while_another_keeps_the_supervisor(
    url: str, masters: list[Master]
) -> None:
    keeper = Master(url, name="keeper", timing=TIMING)
    masters.append(keeper)
    keeper.start()
    old = Master(url, name="again", timing=TIMING)
    old.start()
    wait_until(old.is_master)
    old.stop(timeout=10)
    new = Master(url, name="again", timing=TIMING)
    masters.append(new)
    new.start()
    wait_until(new.is_master, timeout=TIMING.ttl + 5.0)
    assert new.status().token == 2 and holder(url, "again") == new.id


def test_the_last_master_to_stop_ends_the_supervisor_process(url: str) -> None:
    before = set(_supervisors())
    one, two = Master(url, name="one", timing=TIMING), Master(url, name="two", timing=TIMING)
    one.start()
    two.start()
    started = set(_supervisors()) - before
    assert len(started) == 1
    one.stop(timeout=10)
    assert set(_supervisors()) - before == started, "the supervisor ended while a Master still used it"
    two.stop(timeout=10)
    wait_gone(list(started), timeout=5.0)
    assert holder(url, "one") is None and holder(url, "two") is None


def test_supervise_beside_a_master_of_the_same_name_is_refused_before_anything_starts(
    url: str, masters: list[Master]
) -> None:
    master = Master(url, name="clash", timing=TIMING)
    masters.append(master)
    master.start()
    supervisors = set(_supervisors())
    with pytest.raises(ValueError, match=r"'clash'.*already started in this process"):
        gomaster.supervise(_noop, backend=url, name="clash", timing=TIMING)
    assert set(_supervisors()) == supervisors
    wait_until(master.is_master)
