"""docs/recipes/asyncio_worker.py: two workers, one processes the batches; SIGTERM it and it
exits 0 having released the lease, so the other takes over within about one retry (the lease's
expiry would take a ttl)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from gomaster import Timing
from tests.recipes.conftest import BOOT, Programs, assert_one_worker_at_a_time, rows, wait_for

#: A long lease, so that a takeover by expiry (about one ttl) cannot pass for one by release.
TTL = 5.0
RETRY = Timing.from_ttl(TTL).retry
#: A released lease is taken within one retry; this allows for a loaded machine.
RELEASE_SLACK = 1.0
WATCH = 1.0


@pytest.mark.parametrize("to_group", [False, True], ids=["sigterm-to-the-process", "sigterm-to-its-group"])
def test_sigterm_releases_the_lease_so_the_other_worker_takes_over_within_a_retry(
    programs: Programs, to_group: bool
) -> None:
    """To the process, as Kubernetes sends it; to the group, as a terminal's Ctrl-C does, which
    also reaches gomaster's supervisor process."""
    programs.env.update(LEASE_TTL=str(TTL), BATCH_EVERY="0.05")
    app_db = programs.env["APP_DB"]
    workers = [programs.start("asyncio_worker.py") for _ in range(2)]
    pids = {w.pid for w in workers}
    wait_for(lambda: bool(rows(app_db, "batches")), BOOT, "a first batch", programs)
    time.sleep(WATCH)
    before = rows(app_db, "batches")
    assert len({row.pid for row in before}) == 1, f"both workers processed batches: {before}"
    first = next(w for w in workers if w.pid == before[0].pid)
    second = next(w for w in workers if w is not first)

    if to_group:
        os.killpg(first.pid, signal.SIGTERM)
    else:
        os.kill(first.pid, signal.SIGTERM)
    stopped_at = time.monotonic()
    took_over = wait_for(
        lambda: any(row.pid == second.pid for row in rows(app_db, "batches")),
        TTL + BOOT,
        "a batch from the other worker",
        programs,
    )
    assert took_over - stopped_at < RETRY + RELEASE_SLACK, (
        f"the other worker took {took_over - stopped_at:.2f} s: the lease was not released\n"
        + programs.output()
    )
    assert first.wait(10) == 0, f"the stopped worker exited with {first.returncode}\n{programs.output()}"
    assert second.poll() is None, "the other worker ended"
    found = rows(app_db, "batches")
    assert {row.pid for row in found} == pids
    assert_one_worker_at_a_time(found)
    assert found[-1].token > found[0].token
