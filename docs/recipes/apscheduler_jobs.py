"""APScheduler 3 jobs that run on the master only: each tenure's start hook starts a
``BackgroundScheduler`` and its stop hook shuts it down, waiting for running jobs.

    export GOMASTER_BACKEND=postgresql://app@db:5432/app
    python apscheduler_jobs.py

Run it on every node; the jobs run on one of them at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler

import gomaster

TIMING = gomaster.Timing.from_ttl(float(os.environ.get("LEASE_TTL", "5")))
EVERY = float(os.environ.get("DIGEST_EVERY", "60"))  # seconds between two digests
APP_DB = os.environ.get("APP_DB", "app.db")  # stands in for your application's database

log = logging.getLogger("jobs")


def send_digest(token: int) -> None:
    """A job: record one digest, fenced (refused once a newer master has written one)."""
    with contextlib.closing(sqlite3.connect(APP_DB, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS digests (token INTEGER, pid INTEGER, at REAL)")
        written = db.execute(
            "INSERT INTO digests SELECT ?, ?, ? WHERE ? >= (SELECT coalesce(max(token), 0) FROM digests)",
            (token, os.getpid(), time.time(), token),
        ).rowcount
    if written != 1:
        log.warning("token %d is stale: a newer master has written", token)


class Jobs:
    """A fresh scheduler for each tenure, its jobs given that tenure's fencing token."""

    def __init__(self) -> None:
        self.master: gomaster.Master | None = None  # the start hook asks it for the token
        self._scheduler: BackgroundScheduler | None = None

    def start(self) -> None:
        """The start hook: start the scheduler (its own thread) and return."""
        assert self.master is not None
        token = self.master.status().token
        scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(
            send_digest, "interval", seconds=EVERY, kwargs={"token": token}, next_run_time=datetime.now(UTC)
        )
        scheduler.start()
        self._scheduler = scheduler
        log.info("jobs scheduled under token %d", token)

    def stop(self) -> None:
        """The stop hook: no new runs, and wait for the running ones. A job still running after
        the lease's ``grace`` gets this process ended by gomaster: keep jobs shorter than grace,
        or raise grace (``gomaster.Timing(..., grace=...)``)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
            log.info("jobs stopped")


def main() -> None:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    jobs = Jobs()
    # No backend given: gomaster reads GOMASTER_BACKEND.
    master = gomaster.Master(
        name="jobs", start_hook=jobs.start, stop_hook=jobs.stop, hooks="thread", timing=TIMING
    )
    jobs.master = master
    master.start()
    try:
        stop.wait()  # your application runs here
    finally:
        master.stop()  # shuts the scheduler down if it runs, then releases the lease


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
