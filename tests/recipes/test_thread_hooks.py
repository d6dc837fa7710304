"""docs/recipes/thread_hooks.py: the reporter thread runs only on the master; SIGTERM stops it
before the lease is released, and the other process takes over."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from gomaster import Timing
from tests.helpers import released, wait_until
from tests.recipes.conftest import BOOT, RECIPES, Programs, assert_one_worker_at_a_time, rows, wait_for

WATCH = 1.0
TTL = 5.0
#: Well below the grace of a 5 s lease (1 s), beyond which gomaster would end this process.
SLOW_WRITE = 0.2
RETRY = Timing.from_ttl(TTL).retry
RELEASE_SLACK = 1.0


def _load_recipe(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> ModuleType:
    """docs/recipes/thread_hooks.py as a fresh module, reading ``env`` (its settings) at import."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("thread_hooks_recipe", RECIPES / "thread_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses and pickling look it up
    spec.loader.exec_module(module)
    return module


def _reporter_alive() -> bool:
    return any(thread.name == "reporter" for thread in threading.enumerate())


def test_the_stop_hook_has_stopped_the_thread_before_the_lease_isreleased(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'locks.db'}"
    app_db = str(tmp_path / "app.db")
    recipe = _load_recipe(
        monkeypatch, {"GOMASTER_BACKEND": url, "APP_DB": app_db, "LEASE_TTL": str(TTL), "REPORT_EVERY": "0"}
    )
    write_report = recipe.write_report

    def slow_write_report(token: int) -> bool:
        """The thread spends its time here, so a stop hook that does not wait for it returns
        while it still runs."""
        time.sleep(SLOW_WRITE)
        return bool(write_report(token))

    monkeypatch.setattr(recipe, "write_report", slow_write_report)
    seen: list[tuple[str, bool, bool]] = []  # (when, reporter thread alive, lease released)

    class Witnessed(recipe.Reporter):  # type: ignore[name-defined,misc]
        def stop(self) -> None:
            seen.append(("stop hook called", _reporter_alive(), released(url, "reporter")))
            super().stop()
            seen.append(("stop hook returning", _reporter_alive(), released(url, "reporter")))

    master = recipe.make_master(Witnessed())
    master.start()
    try:
        wait_until(lambda: len(rows(app_db, "reports")) >= 3, BOOT, "three reports")
        assert master.is_master() and _reporter_alive()
    finally:
        master.stop(timeout=10)
    assert seen == [("stop hook called", True, False), ("stop hook returning", False, False)], (
        f"the stop hook returned with the reporter running, or after the release: {seen}"
    )
    assert released(url, "reporter"), "stop() did not release the lease"
    count = len(rows(app_db, "reports"))
    time.sleep(0.3)
    assert len(rows(app_db, "reports")) == count, "the reporter thread went on after stop()"
    assert {row.token for row in rows(app_db, "reports")} == {1}


def test_only_the_master_reports_and_sigterm_hands_over_at_once(programs: Programs) -> None:
    programs.env.update(LEASE_TTL=str(TTL), REPORT_EVERY="0.05")
    app_db = programs.env["APP_DB"]
    apps = [programs.start("thread_hooks.py") for _ in range(2)]
    wait_for(lambda: bool(rows(app_db, "reports")), BOOT, "a first report", programs)
    time.sleep(WATCH)
    before = rows(app_db, "reports")
    assert len({row.pid for row in before}) == 1, f"both processes reported: {before}"
    first = next(a for a in apps if a.pid == before[0].pid)
    second = next(a for a in apps if a is not first)

    os.kill(first.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    took_over = wait_for(
        lambda: any(row.pid == second.pid for row in rows(app_db, "reports")),
        TTL + BOOT,
        "a report from the other process",
        programs,
    )
    assert took_over - stopped_at < RETRY + RELEASE_SLACK, (
        f"the other process took {took_over - stopped_at:.2f} s: the lease was not released\n"
        + programs.output()
    )
    assert first.wait(10) == 0, f"the stopped process exited with {first.returncode}\n{programs.output()}"
    found = rows(app_db, "reports")
    assert_one_worker_at_a_time(found)
    assert found[-1].token > found[0].token
    assert "reporter stopped" in programs.output()
