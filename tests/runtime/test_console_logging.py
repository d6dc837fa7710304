"""The log lines a person expects on stderr, and the silence a library owes an application
that set up its own logging."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.output import Output, kill_sessions, start
from tests.runtime.cluster import ROOT

#: Python start-up, worker spawn and the first election, on a loaded machine.
STARTUP = 30.0
ELECTED = "INFO elected master of 'console' with token 1"
STOPPED = "INFO demoted from master of 'console' (token 1): stopped"
#: Ten looks at the lease by a follower on the app's timings (retry 0.2 s).
MANY_LOOKS = 2.0


class Apps:
    """``tests.runtime.console_app`` processes on one SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        self.backend = f"sqlite:///{tmp_path / 'locks.db'}"
        self.running: list[Output] = []

    def start(self, api: str, *extra: str) -> Output:
        argv = [sys.executable, "-m", "tests.runtime.console_app", self.backend, api, *extra]
        output = start(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.running.append(output)
        return output

    def stop(self) -> None:
        kill_sessions(self.running)


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    made = Apps(tmp_path)
    yield made
    made.stop()


def _stop(app: Output) -> str:
    app.process.send_signal(signal.SIGTERM)
    assert app.finish(30) == 0, app.text("stderr")
    return app.text("stderr")


@pytest.mark.parametrize("api", ["supervise", "master"])
def test_without_logging_set_up_elections_show_on_stderr_and_a_stop_is_info(apps: Apps, api: str) -> None:
    app = apps.start(api)
    app.wait_for("working", timeout=STARTUP)
    app.wait_for(ELECTED, "stderr", timeout=5)
    errors = _stop(app)
    assert STOPPED in errors, errors
    assert "WARNING" not in errors, errors
    assert "Traceback" not in errors, errors


@pytest.mark.parametrize("api", ["supervise", "master"])
def test_an_application_that_set_up_logging_gets_nothing_on_stderr(apps: Apps, api: str) -> None:
    app = apps.start(api, "logging")
    app.wait_for("working", timeout=STARTUP)
    errors = _stop(app)
    assert errors == "", f"gomaster wrote to stderr behind the application's back:\n{errors}"
    assert "elected" not in app.text("stdout"), "INFO passed the application's WARNING level"


@pytest.mark.parametrize("api", ["supervise", "master"])
def test_an_application_logging_at_info_sees_the_elections_in_its_own_logging(apps: Apps, api: str) -> None:
    app = apps.start(api, "logging-info")
    app.wait_for("working", timeout=STARTUP)
    app.wait_for("app gomaster elected master of 'console' with token 1", timeout=5)
    errors = _stop(app)
    assert errors == "", f"gomaster wrote to stderr behind the application's back:\n{errors}"
    if api == "master":  # a Master's supervisor is another process: its records were forwarded
        assert "app gomaster stop requested: stopping workers" in app.text("stdout"), app.text("stdout")


@pytest.mark.parametrize("api", ["supervise", "master"])
def test_a_follower_says_once_who_the_master_is(apps: Apps, api: str) -> None:
    first = apps.start(api)
    first.wait_for("working", timeout=STARTUP)
    second = apps.start(api)
    holder = f"waiting: master is {os.uname().nodename} pid "
    second.wait_for(holder, "stderr", timeout=STARTUP)
    time.sleep(MANY_LOOKS)  # the follower looks at the lease every retry (0.2 s): many looks, one line
    first.process.send_signal(signal.SIGTERM)
    second.wait_for("INFO elected master of 'console' with token 2", "stderr", timeout=10)
    assert second.text("stderr").count("waiting: master is") == 1, second.text("stderr")
    assert first.finish(30) == 0
