"""``gomaster.aio``: work as a task in the application's event loop, with the stop enforced in
three layers; a real supervisor process on SQLite, and applications that block their loop."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gomaster.aio
from gomaster import Leadership, Timing
from gomaster.aio import EXIT_OVERRUN, Demoted, Elected, Master, NewLeader
from gomaster.backends import connect
from tests.helpers import force_release, ok, released
from tests.runtime.cluster import ROOT

TIMING = Timing.from_ttl(1.0)
WAIT = 15.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'locks.db'}"


class _Marks:
    """What the work did; with ``url``, whether its lock was already released when it ended."""

    def __init__(self, url: str = "", name: str = "") -> None:
        self.seen: list[tuple[str, int]] = []
        self.released_at_end: list[bool] = []
        self._url, self._name = url, name

    async def work(self, leadership: Leadership) -> None:
        self.seen.append(("started", leadership.token))
        try:
            await asyncio.Event().wait()
        finally:
            self.seen.append(("ended", leadership.token))
            if self._url:
                self.released_at_end.append(released(self._url, self._name))

    def of(self, what: str) -> list[int]:
        return [token for kind, token in self.seen if kind == what]


async def _until(condition: object, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_the_work_runs_as_a_task_while_master_and_is_cancelled_before_the_release(url: str) -> None:
    marks = _Marks(url, "task")

    async def scenario() -> list[object]:
        events: list[object] = []
        async with Master(url, name="task", work=marks.work, timing=TIMING) as master:

            async def listen() -> None:
                async for event in master.events():
                    events.append(event)

            listening = asyncio.ensure_future(listen())
            leadership = await asyncio.wait_for(master.wait_elected(), WAIT)
            assert leadership.token == 1 and leadership.valid() and master.is_master()
            await _until(lambda: marks.of("started") == [1])
            master.resign()
            await _until(lambda: marks.of("ended") == [1])
            await _until(lambda: released(url, "task"))
            assert not master.is_master() and not leadership.valid()
            await asyncio.wait_for(master.wait_elected(), TIMING.ttl + WAIT)  # contends again after a ttl
            await _until(lambda: marks.of("started") == [1, 2])
        await asyncio.wait_for(listening, WAIT)
        return events

    events = asyncio.run(scenario())
    assert marks.of("ended") == [1, 2], "leaving did not cancel the second tenure's work"
    assert marks.released_at_end == [False, False], "a lease was released before its work ended"
    assert released(url, "task")
    roles = [type(e) for e in events if isinstance(e, Elected | Demoted)]
    assert roles[:3] == [Demoted, Elected, Demoted] or roles[:4] == [Elected, Demoted, Elected, Demoted]
    assert any(isinstance(e, NewLeader) for e in events)


def test_supervise_cancels_the_work_releases_and_reraises_when_its_caller_is_cancelled(url: str) -> None:
    marks = _Marks()

    async def scenario() -> None:
        running = asyncio.ensure_future(
            gomaster.aio.supervise(marks.work, backend=url, name="sup", timing=TIMING)
        )
        await _until(lambda: marks.of("started") == [1])
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, WAIT)

    asyncio.run(scenario())
    assert marks.of("ended") == [1]
    assert released(url, "sup")


def test_events_end_at_once_when_the_supervisor_died_before_anyone_listened(url: str) -> None:
    """A node restarting its Master when the supervisor ends must not wait forever on events()."""

    async def scenario() -> tuple[int, bool]:
        master = Master(url, name="gone", timing=TIMING)
        with pytest.raises(RuntimeError, match="not running"):
            await anext(master.events())
        async with master:
            await asyncio.wait_for(master.wait_elected(), WAIT)
            pid = master.supervisor_pid
            assert pid is not None and pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            await _until(lambda: not master.is_master())
            with pytest.raises(RuntimeError, match="stopped"):
                await master.wait_elected()
            seen = [event async for event in master.events()]
            return pid, seen == []

    pid, ended_at_once = asyncio.run(scenario())
    assert ended_at_once
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_work_that_raises_is_restarted_while_master(url: str) -> None:
    starts: list[int] = []

    async def flaky(leadership: Leadership) -> None:
        starts.append(leadership.token)
        if len(starts) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    async def scenario() -> None:
        async with Master(url, name="flaky", work=flaky, timing=TIMING) as master:
            await _until(lambda: len(starts) == 3)
            assert master.is_master()

    asyncio.run(scenario())
    assert starts == [1, 1, 1]


def test_a_coroutine_object_or_a_plain_function_is_refused_naming_the_fix() -> None:
    marks = _Marks()
    pending = marks.work(Leadership("x", "n", 1, 0.0))
    try:
        with pytest.raises(TypeError, match=r"not a coroutine object: pass work, not work\(\)"):
            Master("memory://", work=pending)  # type: ignore[arg-type]
    finally:
        pending.close()

    def plain(_leadership: Leadership) -> None:
        pass

    with pytest.raises(TypeError, match=r"'plain' is a plain function.*async def.*gomaster.supervise"):
        Master("memory://", work=plain)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overrun must be 'kill' or 'warn'"):
        Master("memory://", overrun="ignore")  # type: ignore[arg-type]


# ---- applications that block their event loop -----------------------------------------------


@pytest.fixture
def apps() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for app in started:
        if app.poll() is None:
            app.kill()
            app.wait(5)


def _app(
    apps: list[subprocess.Popen[str]], url: str, name: str, mode: str, overrun: str = "kill"
) -> subprocess.Popen[str]:
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.aio.app", url, name, mode, overrun],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    apps.append(app)
    return app


def _line(app: subprocess.Popen[str], timeout: float = WAIT) -> str:
    assert app.stdout is not None
    assert select.select([app.stdout], [], [], timeout)[0], "the application said nothing"
    return app.stdout.readline().strip()


def _supervisor_of(app: subprocess.Popen[str]) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().split(") ")[-1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as raw:
                command = raw.read()
            if int(fields[1]) == app.pid and b"spawn_main" in command and b"resource_tracker" not in command:
                return int(entry)
    raise AssertionError("no supervisor below the application")


def test_a_loop_blocked_past_grace_with_its_supervisor_frozen_is_ended_by_the_applications_own_timer(
    url: str, apps: list[subprocess.Popen[str]]
) -> None:
    app = _app(apps, url, "frozen", "sleep")
    assert _line(app) == "started 1"
    supervisor = _supervisor_of(app)
    os.kill(supervisor, signal.SIGSTOP)  # no renewal, no demotion, no kill from it: only the guard
    try:
        stopped = time.monotonic()
        code = app.wait(TIMING.ttl + TIMING.grace + WAIT)
        took = time.monotonic() - stopped
    finally:
        os.kill(supervisor, signal.SIGKILL)
    assert code == EXIT_OVERRUN, app.stderr.read() if app.stderr else ""
    assert took <= TIMING.ttl + TIMING.grace + 1.0, f"ended {took:.2f} s after its supervisor froze"


def test_work_that_keeps_the_gil_past_grace_is_killed_by_the_supervisor(
    url: str, apps: list[subprocess.Popen[str]]
) -> None:
    app = _app(apps, url, "spin", "spin")
    assert _line(app) == "started 1"
    force_release(url, "spin")
    released = time.monotonic()
    code = app.wait(TIMING.renew_deadline + TIMING.grace + WAIT)
    took = time.monotonic() - released
    assert code == -signal.SIGKILL
    assert took <= TIMING.heartbeat + TIMING.renew_deadline + TIMING.grace + 1.0, f"killed after {took:.2f} s"


def test_with_overrun_warn_the_supervisor_only_logs_and_releases_after_grace(
    url: str, apps: list[subprocess.Popen[str]]
) -> None:
    app = _app(apps, url, "warned", "spin", "warn")
    assert _line(app) == "started 1"
    force_release(url, "warned")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        seen = ok(connect(url).observe("warned", 5.0)).record
        assert seen is not None
        if seen.released and seen.holder == "":
            break
        time.sleep(0.05)
    time.sleep(TIMING.grace + 1.0)
    assert app.poll() is None, "overrun='warn' must not end the application"


def test_every_awaits_the_job_in_this_loop_once_per_tick_and_records_it_in_the_ledger(url: str) -> None:
    ticks: list[tuple[float, int]] = []
    loop_of_job: list[asyncio.AbstractEventLoop] = []

    async def job(tick: gomaster.Tick) -> None:
        loop_of_job.append(asyncio.get_running_loop())
        ticks.append((tick.at, tick.token))
        await asyncio.sleep(0)

    async def scenario() -> asyncio.AbstractEventLoop:
        running = asyncio.ensure_future(
            gomaster.aio.every(0.5, job, backend=url, name="aio-every", timing=TIMING)
        )
        await _until(lambda: len(ticks) >= 4)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, WAIT)
        return asyncio.get_running_loop()

    loop = asyncio.run(scenario())
    assert set(loop_of_job) == {loop}, "the job ran outside the application's loop"
    at = [tick for tick, _ in ticks]
    assert at == [at[0] + 0.5 * k for k in range(len(at))] and {token for _, token in ticks} == {1}
    record = ok(connect(url).observe("aio-every", 5.0)).record
    assert record is not None and record.released
    assert record.ledger.started is not None and record.ledger.started >= at[-1]


def test_every_refuses_a_sync_job_or_a_coroutine_object_naming_the_fix(url: str) -> None:
    def plain(tick: gomaster.Tick) -> None:
        """Sync: refused."""

    async def job(tick: gomaster.Tick) -> None:
        """Never awaited here."""

    with pytest.raises(TypeError, match="make it `async def`"):
        asyncio.run(gomaster.aio.every("5m", plain, backend=url))  # type: ignore[arg-type]
    made = job(gomaster.Tick(0.0, Leadership(name="x", node_id="n", token=1, since=0.0)))
    try:
        with pytest.raises(TypeError, match="not a coroutine object"):
            asyncio.run(gomaster.aio.every("5m", made, backend=url))  # type: ignore[arg-type]
    finally:
        made.close()
    with pytest.raises(ValueError, match="shorter than the heartbeat"):
        asyncio.run(gomaster.aio.every("10ms", job, backend=url))
