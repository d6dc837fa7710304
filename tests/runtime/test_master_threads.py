"""``Master(hooks="thread")``: go-master's hooks in the application's own process, in order,
with the stop enforced; real supervisor processes on SQLite."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

from gomaster import HookError, Master, Timing
from gomaster.backends import connect
from gomaster.runtime.guard import EXIT_OVERRUN
from tests.helpers import force_release, ok, released, wait_until
from tests.runtime.cluster import ROOT

TIMING = Timing.from_ttl(1.0)




def test_hooks_run_in_this_process_in_order_and_the_release_waits_for_the_stop_hook(
    url: str, masters: list[Master]
) -> None:
    calls: list[tuple[str, int, bool]] = []
    seen_in_start: list[tuple[int, bool] | None] = []
    running = threading.Event()

    def start() -> None:
        lead = master.leadership
        seen_in_start.append((lead.token, lead.valid()) if lead is not None else None)
        calls.append(("start", threading.get_native_id(), released(url, "hooks")))
        time.sleep(TIMING.grace / 4)  # a stop asked for meanwhile waits for this to return
        running.set()
        calls.append(("started", threading.get_native_id(), False))

    def stop() -> None:
        calls.append(("stop", threading.get_native_id(), released(url, "hooks")))
        running.clear()

    master = Master(url, name="hooks", start_hook=start, stop_hook=stop, timing=TIMING, hooks="thread")
    masters.append(master)
    master.start()
    wait_until(lambda: bool(calls))
    master.stop(timeout=10)
    assert [kind for kind, _, _ in calls] == ["start", "started", "stop"]
    assert all(thread != threading.get_native_id() for _, thread, _ in calls), "a hook ran on the caller"
    assert calls[2][2] is False, "the lease was released before the stop hook ran"
    assert not running.is_set(), "the stop hook's effect is not visible in this process"
    assert seen_in_start == [(1, True)], "the start hook did not see its valid tenure"
    assert master.leadership is None
    assert released(url, "hooks")


def test_a_raising_hook_reaches_on_error_and_the_node_stays_master(url: str, masters: list[Master]) -> None:
    errors: list[Exception] = []

    def broken() -> None:
        raise RuntimeError("hook broke")

    master = Master(
        url, name="broken", start_hook=broken, timing=TIMING, hooks="thread", on_error=errors.append
    )
    masters.append(master)
    master.start()
    wait_until(lambda: bool(errors))
    assert isinstance(errors[0], HookError) and "hook broke" in str(errors[0])
    time.sleep(2 * TIMING.heartbeat)
    assert master.is_master()


def test_bad_hook_modes_are_refused_naming_the_choices(url: str) -> None:
    with pytest.raises(ValueError, match="hooks must be 'thread' or 'process'"):
        Master(url, hooks="fiber")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overrun must be 'kill' or 'warn'"):
        Master(url, hooks="thread", overrun="ignore")  # type: ignore[arg-type]


def _app(url: str, name: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.app", url, name, mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(app: subprocess.Popen[str]) -> None:
    assert app.stdout is not None
    assert select.select([app.stdout], [], [], 20)[0], "the application never said ready"
    assert app.stdout.readline().strip() == "ready"


def test_a_start_hook_that_never_returns_ends_the_application_within_grace_of_the_demotion(url: str) -> None:
    app = _app(url, "stuck", "thread-block")
    try:
        _ready(app)
        force_release(url, "stuck")
        released = time.monotonic()
        code = app.wait(20)
        took = time.monotonic() - released
        # Whichever layer came first: the application's guard (exit 70) or its supervisor (SIGKILL).
        assert code in (EXIT_OVERRUN, -signal.SIGKILL), code
        assert took <= TIMING.heartbeat + TIMING.renew_deadline + TIMING.grace + 1.0, (
            f"ended after {took:.2f} s"
        )
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(5)


def test_with_overrun_warn_a_stuck_hook_is_only_logged_and_the_lease_is_released(url: str) -> None:
    app = _app(url, "warned", "thread-block-warn")
    try:
        _ready(app)
        force_release(url, "warned")
        time.sleep(TIMING.renew_deadline + TIMING.grace + 1.5)
        assert app.poll() is None, "overrun='warn' must not end the application"
        seen = ok(connect(url).observe("warned", 5.0)).record
        # Token 1's lease was given up once grace ran out (the node may have claimed token 2).
        assert seen is not None and (seen.released or seen.token >= 2), seen
    finally:
        app.kill()
        app.wait(5)
