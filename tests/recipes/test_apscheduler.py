"""docs/recipes/apscheduler_jobs.py: two nodes, the jobs run on one; SIGKILL it and they go on
on the other, under a higher token, once the lease has expired."""

from __future__ import annotations

import os
import signal
import time

from tests.recipes.conftest import BOOT, Programs, assert_one_worker_at_a_time, rows, wait_for

TTL = 1.0
TAKEOVER_SLACK = 3.0
WATCH = 1.0


def test_jobs_run_on_one_node_and_continue_on_the_other_when_it_is_killed(programs: Programs) -> None:
    programs.env.update(LEASE_TTL=str(TTL), DIGEST_EVERY="0.05")
    app_db = programs.env["APP_DB"]
    nodes = [programs.start("apscheduler_jobs.py") for _ in range(2)]
    wait_for(lambda: bool(rows(app_db, "digests")), BOOT, "a first digest", programs)
    time.sleep(WATCH)
    before = rows(app_db, "digests")
    assert len(before) >= 5, f"the job did not run every {programs.env['DIGEST_EVERY']} s: {before}"
    assert len({row.pid for row in before}) == 1, f"the jobs ran on both nodes: {before}"
    first = next(n for n in nodes if n.pid == before[0].pid)
    second = next(n for n in nodes if n is not first)

    os.kill(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    took_over = wait_for(
        lambda: any(row.pid == second.pid for row in rows(app_db, "digests")),
        TTL + TAKEOVER_SLACK,
        "a digest from the other node",
        programs,
    )
    time.sleep(WATCH)
    found = rows(app_db, "digests")
    assert_one_worker_at_a_time(found)
    after = [row for row in found if row.pid == second.pid]
    assert len(after) >= 5, f"the jobs did not go on on the other node: {after}"
    assert min(r.token for r in after) > max(r.token for r in before)
    assert took_over - killed_at < TTL + TAKEOVER_SLACK
