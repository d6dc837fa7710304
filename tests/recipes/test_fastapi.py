"""docs/recipes/fastapi_app.py: two uvicorn replicas, one runs the report task; SIGKILL it and
the task moves to the other within the lease's ttl, with a higher token; SIGTERM it (uvicorn's
graceful shutdown ends the lifespan, which releases the lease) and it moves within a retry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from gomaster import Timing
from tests.helpers import free_port
from tests.recipes.conftest import BOOT, Programs, assert_one_worker_at_a_time, rows, wait_for

#: SIGKILL: the lease expires; a short one keeps the test short.
KILL_TTL = 1.0
#: SIGTERM: the lease is released; a long one, so that an expiry cannot pass for a release.
TERM_TTL = 5.0
#: Allowance for a loaded machine on top of the expected takeover time.
TAKEOVER_SLACK = 3.0
RELEASE_SLACK = 1.0
#: How long both replicas are watched before the kill, to see that only one runs the task.
WATCH = 1.5


def _leader(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/leader", timeout=2) as answer:
            body: dict[str, object] = json.loads(answer.read())
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _replica(programs: Programs, port: int) -> subprocess.Popen[bytes]:
    return programs.start(
        "-m",
        "uvicorn",
        "fastapi_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    )


@pytest.mark.parametrize(
    ("stop_with", "ttl", "takeover_within"),
    [
        pytest.param(signal.SIGKILL, KILL_TTL, KILL_TTL + TAKEOVER_SLACK, id="sigkill-expiry"),
        pytest.param(
            signal.SIGTERM, TERM_TTL, Timing.from_ttl(TERM_TTL).retry + RELEASE_SLACK, id="sigterm-release"
        ),
    ],
)
def test_one_replica_runs_the_task_and_it_moves_to_the_other_when_that_one_stops(
    programs: Programs, stop_with: signal.Signals, ttl: float, takeover_within: float
) -> None:
    programs.env.update(LEASE_TTL=str(ttl), REPORT_EVERY="0.05")
    app_db = programs.env["APP_DB"]
    ports = [free_port(), free_port()]
    replicas = {port: _replica(programs, port) for port in ports}
    answers: dict[int, dict[str, object] | None] = {}

    def both_answer_and_one_runs() -> bool:
        answers.update({port: _leader(port) for port in ports})
        return all(answers.values()) and any(a and a["running"] for a in answers.values())

    wait_for(both_answer_and_one_runs, BOOT, "both replicas serving, one running the task", programs)
    deadline = time.monotonic() + WATCH
    while time.monotonic() < deadline:
        answers.update({port: _leader(port) for port in ports})
        running = [port for port, a in answers.items() if a and a["running"]]
        assert len(running) == 1, f"replicas running the task: {answers}\n{programs.output()}"
        time.sleep(0.05)
    first = running[0]
    second = next(port for port in ports if port != first)
    before = rows(app_db, "reports")
    assert before and {row.pid for row in before} == {replicas[first].pid}, (
        f"rows from other than the replica that says it runs the task: {before}"
    )

    os.kill(replicas[first].pid, stop_with)
    stopped_at = time.monotonic()
    took_over = wait_for(
        lambda: (answer := _leader(second)) is not None and bool(answer["running"]),
        ttl + TAKEOVER_SLACK,
        "the other replica running the task after the master was stopped",
        programs,
    )
    wait_for(
        lambda: any(row.pid == replicas[second].pid for row in rows(app_db, "reports")),
        TAKEOVER_SLACK,
        "a report from the new master",
        programs,
    )
    found = rows(app_db, "reports")
    assert_one_worker_at_a_time(found)
    old = [row for row in found if row.pid == replicas[first].pid]
    new = [row for row in found if row.pid == replicas[second].pid]
    assert min(r.token for r in new) > max(r.token for r in old), (
        f"the new master's token is not higher: {found}"
    )
    assert max(r.at for r in old) < min(r.at for r in new), "the two replicas' reports overlap in time"
    assert took_over - stopped_at < takeover_within, (
        f"the task moved after {took_over - stopped_at:.2f} s, not within {takeover_within} s\n"
        + programs.output()
    )
    replicas[first].wait(10)  # uvicorn ends after a graceful shutdown, too
    answer = _leader(second)
    assert answer is not None and answer["master"] is True
