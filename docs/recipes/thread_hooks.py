"""A sync application with go-master's hooks: the start hook starts a background thread and
returns, the stop hook stops it. Both run in this process (``hooks="thread"``).

    export GOMASTER_BACKEND=mysql://app:secret@db:3306/app
    python thread_hooks.py

SIGTERM or Ctrl-C: the stop hook stops the thread, then the lease is released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from types import FrameType

import gomaster

TIMING = gomaster.Timing.from_ttl(float(os.environ.get("LEASE_TTL", "5")))
EVERY = float(os.environ.get("REPORT_EVERY", "5"))  # seconds between two reports
APP_DB = os.environ.get("APP_DB", "app.db")  # stands in for your application's database

log = logging.getLogger("reporter")


def write_report(token: int) -> bool:
    """Write one report, fenced: refused (False) once a newer master has written one."""
    with contextlib.closing(sqlite3.connect(APP_DB, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS reports (token INTEGER, pid INTEGER, at REAL)")
        written = db.execute(
            "INSERT INTO reports SELECT ?, ?, ? WHERE ? >= (SELECT coalesce(max(token), 0) FROM reports)",
            (token, os.getpid(), time.time(), token),
        ).rowcount
    return written == 1


class Reporter:
    """The master-only work: a thread that writes a report every ``EVERY`` seconds."""

    def __init__(self) -> None:
        self.master: gomaster.Master | None = None  # the start hook asks it for the token
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """The start hook: start the thread and return."""
        assert self.master is not None
        token = self.master.status().token  # this tenure's fencing token
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(token,), name="reporter")
        self._thread.start()
        log.info("reporter started under token %d", token)

    def stop(self) -> None:
        """The stop hook: stop the thread and return once it has ended. It must end within the
        lease's ``grace`` (1 s with a 5 s lease), or gomaster ends this process."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            log.info("reporter stopped")

    def _run(self, token: int) -> None:
        while not self._stopping.is_set():
            if not write_report(token):
                log.warning("token %d is stale: a newer master has written", token)
                return
            self._stopping.wait(EVERY)


def make_master(reporter: Reporter) -> gomaster.Master:
    # No backend given: gomaster reads GOMASTER_BACKEND.
    master = gomaster.Master(
        name="reporter", start_hook=reporter.start, stop_hook=reporter.stop, hooks="thread", timing=TIMING
    )
    reporter.master = master
    return master


def main() -> None:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    master = make_master(Reporter())
    master.start()
    try:
        stop.wait()  # your application runs here: serve requests, consume a queue, ...
    finally:
        master.stop()  # stops the reporter if it runs, then releases the lease


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main()
