"""A node whose targets are coroutines: ``python -m tests.runtime.async_app URL MARKS``.

It supervises three targets under one name: an ``async def``, a ``functools.partial`` around one
and a lambda returning one. Each appends ``started LABEL TOKEN`` to the file MARKS when it
starts and ``cancelled LABEL TOKEN`` when it is cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from pathlib import Path

import gomaster
from gomaster import Leadership


def _mark(path: Path, text: str) -> None:
    with path.open("a") as out:
        out.write(text + "\n")


async def work(path: Path, label: str, leadership: Leadership) -> None:
    _mark(path, f"started {label} {leadership.token}")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _mark(path, f"cancelled {label} {leadership.token}")
        raise


async def plain(leadership: Leadership) -> None:
    await work(Path(sys.argv[2]), "plain", leadership)


def main() -> None:
    url, marks = sys.argv[1], Path(sys.argv[2])
    targets: list[Callable[[Leadership], object]] = [
        plain,
        functools.partial(work, marks, "partial"),
        lambda leadership: work(marks, "lambda", leadership),
    ]
    gomaster.supervise(targets, backend=url, name="async", timing=gomaster.Timing.from_ttl(1.0))


if __name__ == "__main__":
    main()
