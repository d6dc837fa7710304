"""A plain asyncio worker: run it on every node, and one of them processes the batches.

    export GOMASTER_BACKEND=redis://cache:6379/0
    python asyncio_worker.py

SIGTERM or Ctrl-C stops it gracefully: the work is cancelled, the lease released (another node
takes over within one ``retry``, not one ``ttl``) and the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import time

import gomaster
import gomaster.aio

TIMING = gomaster.Timing.from_ttl(float(os.environ.get("LEASE_TTL", "5")))
EVERY = float(os.environ.get("BATCH_EVERY", "5"))  # seconds between two batches
APP_DB = os.environ.get("APP_DB", "app.db")  # stands in for your application's database

log = logging.getLogger("worker")


def process_batch(token: int) -> bool:
    """Process one batch and record it, fenced: refused (False) once a newer master has written."""
    with contextlib.closing(sqlite3.connect(APP_DB, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS batches (token INTEGER, pid INTEGER, at REAL)")
        written = db.execute(
            "INSERT INTO batches SELECT ?, ?, ? WHERE ? >= (SELECT coalesce(max(token), 0) FROM batches)",
            (token, os.getpid(), time.time(), token),
        ).rowcount
    return written == 1


async def process_batches(leadership: gomaster.Leadership) -> None:
    """Master-only work: a task in this process's event loop, cancelled on demotion."""
    log.info("processing batches under token %d", leadership.token)
    while await asyncio.to_thread(process_batch, leadership.token):
        await asyncio.sleep(EVERY)
    log.warning("token %d is stale: a newer master has written", leadership.token)


async def main() -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main_task.cancel)  # supervise() cancels the work, releases
    # No backend given: gomaster reads GOMASTER_BACKEND.
    await gomaster.aio.supervise(process_batches, name="batches", timing=TIMING)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(asyncio.CancelledError):  # the signal's cancellation: a clean exit
        asyncio.run(main())
    log.info("stopped")
