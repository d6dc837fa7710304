"""A FastAPI service whose replicas elect one to refresh a report in the background.

Start two or more replicas against a backend they all reach:

    export GOMASTER_BACKEND=postgresql://app@db:5432/app
    uvicorn fastapi_app:app --port 8001      # and --port 8002 in another terminal

Every replica serves requests; only the master runs ``refresh_reports``. ``GET /leader`` says
which one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI

import gomaster
import gomaster.aio

TIMING = gomaster.Timing.from_ttl(float(os.environ.get("LEASE_TTL", "5")))
EVERY = float(os.environ.get("REPORT_EVERY", "10"))  # seconds between two refreshes
APP_DB = os.environ.get("APP_DB", "app.db")  # stands in for your application's database

log = logging.getLogger(__name__)


def create_tables() -> None:
    with contextlib.closing(sqlite3.connect(APP_DB, timeout=10)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS reports (token INTEGER, pid INTEGER, at REAL)")


def save_report(token: int) -> bool:
    """Write one report, fenced: refused (False) once a newer master has written one."""
    with contextlib.closing(sqlite3.connect(APP_DB, timeout=10)) as db, db:
        written = db.execute(
            "INSERT INTO reports SELECT ?, ?, ? WHERE ? >= (SELECT coalesce(max(token), 0) FROM reports)",
            (token, os.getpid(), time.time(), token),
        ).rowcount
    return written == 1


@dataclass
class Replica:
    """What this replica knows about the election, for ``GET /leader``."""

    node: gomaster.aio.Master | None = None
    running: int | None = None  # the token the report task runs under; None when it does not run


replica = Replica()


async def refresh_reports(leadership: gomaster.Leadership) -> None:
    """Master-only work: a task in this replica's event loop, cancelled on demotion."""
    replica.running = leadership.token
    try:
        while await asyncio.to_thread(save_report, leadership.token):
            await asyncio.sleep(EVERY)
        log.warning("token %d is stale: a newer master has written", leadership.token)
    finally:
        replica.running = None


@contextlib.asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    create_tables()
    # No backend given: gomaster reads GOMASTER_BACKEND.
    async with gomaster.aio.Master(name="reports", work=refresh_reports, timing=TIMING) as node:
        replica.node = node
        yield  # the replica serves; on shutdown the task is cancelled, then the lease released
    replica.node = None


app = FastAPI(lifespan=lifespan)


@app.get("/leader")
async def leader() -> dict[str, object]:
    """Whether this replica is master, and the token its report task runs under."""
    node = replica.node
    return {"master": node is not None and node.is_master(), "running": replica.running, "pid": os.getpid()}
